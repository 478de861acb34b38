"""Shared fixtures: real Postgres and Redis on loopback, one isolated table prefix per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio

from langgraph_resilient import ResilientSaver

POSTGRES_URL = os.environ.get("LGR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("LGR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

BACKENDS = ["postgres", "sqlite", "tiered"]
"""``tiered`` is Postgres with the Redis tier and the in-process cache in front of it."""


def unique_prefix() -> str:
    """A table/key prefix no other test uses, so tests never see each other's rows."""
    return f"t{uuid.uuid4().hex[:10]}_"


async def drop_prefixed_tables(url: str, prefix: str) -> None:
    """Drop every table whose name starts with ``prefix`` (the test's own schema)."""
    conn = await asyncpg.connect(url)
    try:
        names = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "AND starts_with(tablename, $1)",
            prefix,
        )
        for row in names:
            await conn.execute(f'DROP TABLE IF EXISTS "{row["tablename"]}" CASCADE')
    finally:
        await conn.close()


async def drop_prefixed_keys(url: str, prefix: str) -> None:
    """Delete every Redis key under ``prefix`` (the test's own keys)."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


SaverFactory = Callable[..., Awaitable[ResilientSaver]]


@pytest.fixture
def pg_url() -> str:
    return POSTGRES_URL


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_saver(backend: str, tmp_path: Path) -> AsyncIterator[SaverFactory]:
    """Returns ``await make_saver(**kwargs)``: an entered async saver on the test's backend.

    Every saver the factory makes in one test shares that test's prefix (Postgres) or file
    (SQLite), so a second saver sees what the first wrote, like a second replica would.
    Everything is closed and dropped when the test ends.
    """
    prefix = unique_prefix()
    sqlite_path = tmp_path / "state.db"
    opened: list[ResilientSaver] = []

    async def factory(**kwargs: Any) -> ResilientSaver:
        if backend in ("postgres", "tiered"):
            kwargs.setdefault("postgres_url", POSTGRES_URL)
            if backend == "tiered":
                kwargs.setdefault("redis_url", REDIS_URL)
        else:
            kwargs.setdefault("sqlite_path", str(sqlite_path))
        kwargs.setdefault("prefix", prefix)
        saver = ResilientSaver.from_urls(**kwargs)
        await saver.__aenter__()
        opened.append(saver)
        return saver

    try:
        yield factory
    finally:
        for saver in reversed(opened):
            await saver.__aexit__(None, None, None)
        if backend in ("postgres", "tiered"):
            await drop_prefixed_tables(POSTGRES_URL, prefix)
        if backend == "tiered":
            await drop_prefixed_keys(REDIS_URL, prefix)


@pytest.fixture
async def saver(make_saver: SaverFactory) -> ResilientSaver:
    """One entered async saver on the test's backend (both backends, by parametrization)."""
    return await make_saver()
