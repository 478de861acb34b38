"""Each put and put_writes is one statement (one transaction, one round trip once prepared),
and repeating one, as a retry after a lost reply would, changes nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from langgraph_resilient import ResilientSaver
from tests.conftest import SaverFactory
from tests.probes import log_postgres_statements


def _cp(i: int) -> dict[str, Any]:
    cp = dict(empty_checkpoint())
    cp["channel_values"] = {"a": i, "b": [i]}
    cp["channel_versions"] = {"a": str(i), "b": str(i)}
    return cp


async def test_repeated_put_and_put_writes_change_nothing(saver: ResilientSaver) -> None:
    config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    cp = _cp(1)
    stored = await saver.aput(config, cp, {"step": 1}, {"a": "1", "b": "1"})  # type: ignore[arg-type]
    again = await saver.aput(config, cp, {"step": 1}, {"a": "1", "b": "1"})  # type: ignore[arg-type]
    assert again == stored
    await saver.aput_writes(stored, [("a", 10), ("__interrupt__", "first")], "task")
    await saver.aput_writes(stored, [("a", 99), ("__interrupt__", "second")], "task")
    tup = await saver.aget_tuple(stored)
    assert tup is not None
    # writes_sort_key order: (task_path, task_id, idx), special channels have negative idx
    assert tup.pending_writes == [("task", "__interrupt__", "second"), ("task", "a", 10)]
    assert len([t async for t in saver.alist(config)]) == 1


@pytest.mark.parametrize("backend", ["postgres"])
async def test_put_and_put_writes_are_one_statement_each(make_saver: SaverFactory) -> None:
    """Counted on the wire: every connection of the saver logs each query it sends."""
    saver = await make_saver(pool_min_size=1, pool_max_size=2)
    store = saver.store
    config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    # the first use of a statement prepares it and looks up its types: not counted
    warm = await saver.aput(config, _cp(0), {}, {"a": "0", "b": "0"})  # type: ignore[arg-type]
    await saver.aput_writes(warm, [("a", 0)], "warm")
    await saver.aget_tuple(config)  # type: ignore[arg-type]

    connections = store.writer_connections()  # type: ignore[attr-defined]
    assert len(connections) == 1, "one group-commit connection (and one pool connection)"
    statements = await log_postgres_statements(saver)

    stored = await saver.aput(config, _cp(1), {}, {"a": "1", "b": "1"})  # type: ignore[arg-type]
    await asyncio.sleep(0.01)  # asyncpg calls query loggers on the next loop turn
    assert len(statements) == 1 and "INSERT INTO" in statements[0]
    await saver.aput_writes(stored, [("a", 1), ("b", 2), ("__error__", "x")], "task")
    await asyncio.sleep(0.01)
    assert len(statements) == 2
    await saver.aget_tuple(config)  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    assert len(statements) == 3
