"""Closing a saver never hangs, whatever its background tasks were doing.

Python 3.11's ``asyncio.wait_for`` loses a cancellation that arrives while the work it waits
for is finishing; the Redis tier's repair loop used it, so a close could wait forever on a loop
that no longer knew it was cancelled (seen at the end of a full benchmark run).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from langgraph_resilient import ResilientSaver
from tests.conftest import POSTGRES_URL, REDIS_URL, drop_backend, unique_prefix

CLOSE_LIMIT_S = 10.0


def _config(thread_id: str) -> Any:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}


async def test_closing_hundreds_of_savers_with_a_busy_repair_loop_never_hangs() -> None:
    prefix = unique_prefix()
    try:
        for i in range(300):
            saver = ResilientSaver.from_urls(
                postgres_url=POSTGRES_URL,
                redis_url=REDIS_URL,
                prefix=prefix,
                redis_repair_interval_s=0.001,
                migrate_on_enter=i == 0,
            )
            await saver.__aenter__()
            await saver.aput(_config(f"t{i % 7}"), empty_checkpoint(), {}, {})
            async with asyncio.timeout(CLOSE_LIMIT_S):
                await saver.__aexit__(None, None, None)
    finally:
        await drop_backend("tiered", prefix)


async def test_a_close_that_lands_as_a_repair_finishes_does_not_hang() -> None:
    """The exact race, made deterministic: the close starts in the same loop turn in which a
    repair round finishes (the store call schedules it just before returning)."""
    prefix = unique_prefix()
    saver = ResilientSaver.from_urls(
        postgres_url=POSTGRES_URL,
        redis_url=REDIS_URL,
        prefix=prefix,
        redis_repair_interval_s=0.001,
    )
    await saver.__aenter__()
    store: Any = saver.store
    real_dirty_threads = store.dirty_threads
    closing: list[asyncio.Task[None]] = []
    scheduled = asyncio.Event()

    async def dirty_threads(limit: int) -> list[tuple[str, int]]:
        rows: list[tuple[str, int]] = await real_dirty_threads(limit)
        if not closing:
            closing.append(
                asyncio.get_running_loop().create_task(saver.__aexit__(None, None, None))
            )
            scheduled.set()
        return rows

    store.dirty_threads = dirty_threads
    try:
        async with asyncio.timeout(CLOSE_LIMIT_S):
            await scheduled.wait()
            await closing[0]
    finally:
        await drop_backend("tiered", prefix)


async def test_a_task_that_ignores_cancellation_is_abandoned_and_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The last line of defence: a background task that will not stop costs the close its
    time limit, not forever, and the log says which task it was."""
    prefix = unique_prefix()
    saver = ResilientSaver.from_urls(postgres_url=POSTGRES_URL, redis_url=REDIS_URL, prefix=prefix)
    await saver.__aenter__()
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                continue  # what a buggy loop does

    link: Any = saver.tiers.redis.link  # type: ignore[union-attr]
    link._sweep_task = asyncio.get_running_loop().create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0.01)  # let it reach its loop: a task cancelled before it ran just ends
    started = asyncio.get_running_loop().time()
    try:
        with caplog.at_level(logging.ERROR, logger="langgraph_resilient.redis"):
            async with asyncio.timeout(CLOSE_LIMIT_S):
                await saver.__aexit__(None, None, None)
        assert asyncio.get_running_loop().time() - started < CLOSE_LIMIT_S
        assert any("stubborn" in r.getMessage() and "abandoned" in r.getMessage()
                   for r in caplog.records)  # fmt: skip
    finally:
        release.set()
        await drop_backend("tiered", prefix)


async def test_closing_a_saver_releases_the_leases_still_held() -> None:
    """A lease whose ``with`` block outlives the saver is released (and marked lost) by the
    close, so its renewal stops and another worker can take the thread at once."""
    prefix = unique_prefix()
    kwargs: dict[str, Any] = {
        "postgres_url": POSTGRES_URL,
        "redis_url": REDIS_URL,
        "prefix": prefix,
    }
    try:
        saver = ResilientSaver.from_urls(**kwargs)
        await saver.__aenter__()
        lock = saver.lock_thread("held", ttl_s=30.0)
        lease = await lock.__aenter__()
        async with asyncio.timeout(CLOSE_LIMIT_S):
            await saver.__aexit__(None, None, None)
        assert lease.lost and lease.released
        await lock.__aexit__(None, None, None)  # nothing left to do, and no error
        async with (
            ResilientSaver.from_urls(**kwargs) as other,
            other.lock_thread("held", wait_s=0.0) as again,
        ):
            assert again.epoch > lease.epoch
    finally:
        await drop_backend("tiered", prefix)
