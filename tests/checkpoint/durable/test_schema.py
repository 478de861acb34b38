"""Versioned migrations: applied on enter and by the CLI, safe when replicas start at once,
and a database at a newer version than the code is refused."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from langgraph_resilient import ResilientSaver, SchemaVersionError
from langgraph_resilient.checkpoint.durable.schema import SCHEMA_VERSION
from langgraph_resilient.cli import main
from tests.conftest import POSTGRES_URL, SaverFactory, drop_prefixed_tables, unique_prefix


async def test_many_replicas_entering_at_once_migrate_once(make_saver: SaverFactory) -> None:
    savers = await asyncio.gather(*(make_saver() for _ in range(8)))
    versions = {await s.store.schema_version() for s in savers}
    assert versions == {SCHEMA_VERSION}


async def _set_version(saver: ResilientSaver, backend: str, version: int) -> None:
    table = f"{saver.settings.prefix}schema"
    if backend != "sqlite":
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(f"UPDATE {table} SET version = $1", version)
        finally:
            await conn.close()
    else:
        path = saver.store.path  # type: ignore[attr-defined]
        with sqlite3.connect(path) as conn:
            conn.execute(f"UPDATE {table} SET version = ?", (version,))


async def test_newer_schema_is_refused(make_saver: SaverFactory, backend: str) -> None:
    first = await make_saver()
    await _set_version(first, backend, SCHEMA_VERSION + 1)
    with pytest.raises(SchemaVersionError, match="upgrade"):
        await make_saver()
    with pytest.raises(SchemaVersionError, match="upgrade"):
        await make_saver(migrate_on_enter=False)


async def test_unmigrated_database_without_auto_migration_is_refused(
    make_saver: SaverFactory,
) -> None:
    with pytest.raises(SchemaVersionError, match="langgraph-resilient migrate"):
        await make_saver(migrate_on_enter=False)


def test_cli_migrate_then_enter_without_migrating(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = unique_prefix()
    try:
        assert main(["migrate", "--postgres-url", POSTGRES_URL, "--prefix", prefix]) == 0
        assert f"schema version 0 -> {SCHEMA_VERSION}" in capsys.readouterr().out
        assert main(["migrate", "--postgres-url", POSTGRES_URL, "--prefix", prefix]) == 0
        out = capsys.readouterr().out
        assert f"schema version {SCHEMA_VERSION} -> {SCHEMA_VERSION}" in out
        assert main(["doctor", "--postgres-url", POSTGRES_URL, "--prefix", prefix]) == 0
        with ResilientSaver.from_urls(
            postgres_url=POSTGRES_URL, prefix=prefix, migrate_on_enter=False
        ) as saver:
            assert saver.get_tuple({"configurable": {"thread_id": "x"}}) is None
    finally:
        asyncio.run(drop_prefixed_tables(POSTGRES_URL, prefix))
    db = str(tmp_path / "cli.db")
    assert main(["migrate", "--sqlite-path", db]) == 0
    assert main(["doctor", "--sqlite-path", db]) == 0


def test_cli_doctor_reports_an_unreachable_database(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--postgres-url", "postgresql://postgres@127.0.0.1:1/test"]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM: postgres: cannot connect" in out


def test_cli_doctor_reports_an_unmigrated_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty.db").touch()  # doctor creates nothing: a missing file is another problem
    assert main(["doctor", "--sqlite-path", str(tmp_path / "empty.db")]) == 1
    assert "run `langgraph-resilient migrate`" in capsys.readouterr().out
