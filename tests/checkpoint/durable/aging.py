"""Helpers of the retention tests (also used by the CLI's prune tests)."""

from __future__ import annotations

import sqlite3

import asyncpg
from langgraph.checkpoint.base import empty_checkpoint

from langgraph_resilient import ResilientSaver
from tests.conftest import POSTGRES_URL


async def age_thread(saver: ResilientSaver, backend: str, thread_id: str, days: int) -> None:
    """Make a thread's checkpoints look ``days`` old (the tests cannot wait that long)."""
    table = f"{saver.settings.prefix}checkpoints"
    if backend == "sqlite":
        with sqlite3.connect(saver.store.path) as conn:  # type: ignore[attr-defined]
            conn.execute(
                f"UPDATE {table} SET created_at = created_at - ? WHERE thread_id = ?",
                (days * 86400, thread_id),
            )
        return
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(
            f"UPDATE {table} SET created_at = created_at - make_interval(days => $1) "
            "WHERE thread_id = $2",
            days,
            thread_id,
        )
    finally:
        await conn.close()


async def put_checkpoints(saver: ResilientSaver, thread_id: str, n: int = 2) -> None:
    """``n`` checkpoints on the thread, in a chain."""
    config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    for i in range(n):
        cp = dict(empty_checkpoint())
        cp["channel_values"] = {"v": i}
        cp["channel_versions"] = {"v": str(i)}
        config = await saver.aput(config, cp, {"step": i}, {"v": str(i)})  # type: ignore[arg-type]
