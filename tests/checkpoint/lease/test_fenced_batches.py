"""Fenced writes of many leases are group-committed all or nothing: a batch that holds a
superseded lease's write, or a forked put, is replayed write by write, so only the guilty
writer is refused and the others are stored."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from langgraph_resilient import ForkedHistoryError, ResilientSaver, StaleLeaseError
from langgraph_resilient.checkpoint.records import Batch, WriteRecord, WritesOp
from tests.conftest import SaverFactory


def _cp(i: int) -> dict[str, Any]:
    cp = dict(empty_checkpoint())
    cp["channel_values"] = {"v": i}
    cp["channel_versions"] = {"v": str(i)}
    return cp


def _batching(saver: ResilientSaver) -> None:
    """One flush at a time, so concurrent writes queue up and leave together."""
    saver.fenced.committer.max_inflight = 1


async def _first_checkpoints(saver: ResilientSaver, threads: list[str]) -> dict[str, Any]:
    heads = {}
    for tid in threads:
        config = {"configurable": {"thread_id": tid, "checkpoint_ns": ""}}
        heads[tid] = await saver.aput(config, _cp(0), {}, {"v": "0"})  # type: ignore[arg-type]
    return heads


async def test_concurrent_fenced_writes_share_batches(make_saver: SaverFactory) -> None:
    saver = await make_saver()
    _batching(saver)
    threads = [f"t{i}" for i in range(12)]
    heads = await _first_checkpoints(saver, threads)
    for epoch, tid in enumerate(threads, start=10):
        saver.fenced.hold(tid, epoch, None)
    flushes = saver.fenced.committer.flushes

    async def step(tid: str) -> Any:
        stored = await saver.aput(heads[tid], _cp(1), {}, {"v": "1"})
        await saver.aput_writes(stored, [("v", tid)], "task")
        return stored

    stored = await asyncio.gather(*(step(tid) for tid in threads))
    assert saver.fenced.committer.flushes - flushes < 2 * len(threads), "writes were batched"
    for tid, config in zip(threads, stored, strict=True):
        tup = await saver.aget_tuple({"configurable": {"thread_id": tid, "checkpoint_ns": ""}})
        assert tup is not None and tup.config == config
        assert tup.checkpoint["channel_values"] == {"v": 1}
        assert tup.pending_writes == [("task", "v", tid)]


@pytest.mark.parametrize("fault", ["stale", "fork"])
async def test_a_refused_write_in_a_batch_fails_alone(make_saver: SaverFactory, fault: str) -> None:
    saver = await make_saver()
    _batching(saver)
    threads = [f"t{i}" for i in range(6)]
    heads = await _first_checkpoints(saver, threads)
    for tid in threads:
        saver.fenced.hold(tid, 5, None)
    # "t0" has since been taken over by a newer lease (epoch 6) that wrote once
    saver.fenced.hold("t0", 6, None)
    moved = await saver.aput(heads["t0"], _cp(2), {}, {"v": "2"})  # type: ignore[arg-type]
    if fault == "stale":
        saver.fenced.hold("t0", 5, None)  # this worker still writes with the old epoch
    parent = heads["t0"]  # not the head any more: a fork, and under the old epoch a stale one

    async def step(tid: str) -> Any:
        return await saver.aput(heads[tid] if tid != "t0" else parent, _cp(3), {}, {"v": "3"})

    # "t0" goes last: the first write leaves alone, the rest queue up and share a batch
    order = [*threads[1:], "t0"]
    results = await asyncio.gather(*(step(tid) for tid in order), return_exceptions=True)
    results = [results[-1], *results[:-1]]
    expected = StaleLeaseError if fault == "stale" else ForkedHistoryError
    assert isinstance(results[0], expected), results[0]
    assert all(not isinstance(r, BaseException) for r in results[1:]), results
    head = await saver.aget_tuple({"configurable": {"thread_id": "t0", "checkpoint_ns": ""}})
    assert head is not None and head.config == moved, "the refused write stored nothing"
    for tid, config in zip(threads[1:], results[1:], strict=True):
        tup = await saver.aget_tuple({"configurable": {"thread_id": tid, "checkpoint_ns": ""}})
        assert tup is not None and tup.config == config


@pytest.mark.parametrize("backend", ["postgres"])
async def test_concurrent_fenced_batches_of_the_same_threads_never_deadlock(
    make_saver: SaverFactory,
) -> None:
    """Two batches holding the same leased threads in opposite orders, committed at the same
    time, again and again: each takes the threads' fence rows in one order, so Postgres never
    finds a deadlock (it would break one after ``deadlock_timeout``, a second's stall, and fail
    that batch)."""
    saver = await make_saver(pool_min_size=4, pool_max_size=4)
    threads = [f"d{i}" for i in range(8)]
    heads = await _first_checkpoints(saver, threads)
    for tid in threads:
        saver.fenced.hold(tid, 7, None)
    store = saver.store
    deadlocks_before = await _deadlocks(saver)

    def batch(order: list[str], round_: int) -> Batch:
        ops = [
            WritesOp(
                tid,
                "",
                heads[tid]["configurable"]["checkpoint_id"],
                [WriteRecord(f"task{round_}", 0, "v", "msgpack", b"\x01", "")],
                7,
            )
            for tid in order
        ]
        return Batch([], ops)

    for round_ in range(40):
        await asyncio.gather(
            *(store.write_fenced_batch(batch(order, round_)) for order in
              (threads, threads[::-1], threads[1::2] + threads[::2]))
        )  # fmt: skip
    assert await _deadlocks(saver) == deadlocks_before


async def _deadlocks(saver: ResilientSaver) -> int:
    async with saver.store.pool.acquire() as conn:  # type: ignore[attr-defined]
        return int(
            await conn.fetchval(
                "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
            )
        )
