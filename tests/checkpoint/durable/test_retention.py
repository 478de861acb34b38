"""Retention: `prune --older-than` prunes idle threads in bounded batches, sparing fresh ones."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from langgraph_resilient import ConfigurationError, ResilientSaver
from langgraph_resilient.cli import main, parse_age
from tests.checkpoint.durable.aging import age_thread, put_checkpoints
from tests.conftest import POSTGRES_URL, SaverFactory, drop_prefixed_tables, unique_prefix


async def test_prune_older_than_in_batches(make_saver: SaverFactory, backend: str) -> None:
    saver = await make_saver()
    old = [f"old-{i}" for i in range(7)]
    for tid in [*old, "fresh-1", "fresh-2"]:
        await put_checkpoints(saver, tid)
    for tid in old:
        await age_thread(saver, backend, tid, days=40)

    assert await saver.aprune_older_than(timedelta(days=30), batch_size=3) == 7
    remaining = {t.config["configurable"]["thread_id"] async for t in saver.alist(None)}
    assert remaining == {"fresh-1", "fresh-2"}
    assert await saver.aprune_older_than(timedelta(days=30)) == 0

    await put_checkpoints(saver, "old-kept", n=3)
    await age_thread(saver, backend, "old-kept", days=40)
    assert await saver.aprune_older_than(timedelta(days=30), strategy="keep_latest") == 1
    kept = [t async for t in saver.alist({"configurable": {"thread_id": "old-kept"}})]
    assert len(kept) == 1 and kept[0].metadata["step"] == 2


async def test_bad_retention_arguments(saver: ResilientSaver) -> None:
    with pytest.raises(ConfigurationError, match="positive"):
        await saver.aprune_older_than(timedelta(0))
    with pytest.raises(ConfigurationError, match="strategy"):
        await saver.aprune_older_than(timedelta(days=1), strategy="all")


def test_cli_prune(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prefix = unique_prefix()

    async def seed() -> None:
        async with ResilientSaver.from_urls(postgres_url=POSTGRES_URL, prefix=prefix) as saver:
            await put_checkpoints(saver, "idle")
            await put_checkpoints(saver, "active")
            await age_thread(saver, "postgres", "idle", days=10)

    try:
        asyncio.run(seed())
        args = ["prune", "--postgres-url", POSTGRES_URL, "--prefix", prefix, "--older-than"]
        assert main([*args, "7d"]) == 0
        assert "pruned 1 thread(s)" in capsys.readouterr().out
        assert main([*args, "7d"]) == 0
        assert "pruned 0 thread(s)" in capsys.readouterr().out
    finally:
        asyncio.run(drop_prefixed_tables(POSTGRES_URL, prefix))
    assert parse_age("12h") == timedelta(hours=12)
    with pytest.raises(SystemExit):
        main(["prune", "--older-than", "soon"])
