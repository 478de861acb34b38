"""``GroupCommitter``: concurrent writes share flushes, and each caller learns its own outcome."""

from __future__ import annotations

import asyncio

import pytest

from langgraph_resilient.checkpoint.batcher import GroupCommitter
from langgraph_resilient.checkpoint.records import Batch, WriteRecord, WritesOp


def _op(i: int) -> WritesOp:
    return WritesOp(f"t{i}", "", "c", [WriteRecord("task", 0, "ch", "json", b"1", "")])


class Flushes:
    """A flush function that records each batch and can be made slow or failing."""

    def __init__(self, delay_s: float = 0.0, poison: set[str] | None = None) -> None:
        self.delay_s = delay_s
        self.poison = poison or set()
        self.batches: list[list[str]] = []

    async def __call__(self, batch: Batch) -> None:
        threads = [op.thread_id for op in batch.writes]
        self.batches.append(threads)
        await asyncio.sleep(self.delay_s)
        if self.poison & set(threads):
            raise ValueError(f"poisoned {sorted(self.poison & set(threads))}")


async def test_a_lone_write_goes_out_at_once_in_a_batch_of_one() -> None:
    flushes = Flushes()
    committer = GroupCommitter(flushes, max_inflight=2)
    await committer.submit(_op(0))
    assert flushes.batches == [["t0"]] and committer.flushes == 1


async def test_writes_arriving_while_every_slot_is_busy_leave_together() -> None:
    flushes = Flushes(delay_s=0.05)
    committer = GroupCommitter(flushes, max_inflight=1, max_batch=4)
    await asyncio.gather(*(committer.submit(_op(i)) for i in range(9)))
    assert sorted(t for batch in flushes.batches for t in batch) == sorted(
        f"t{i}" for i in range(9)
    )
    assert flushes.batches[0] == ["t0"], "the first went alone, at once"
    assert max(len(b) for b in flushes.batches) == 4, "max_batch bounds a flush"
    assert len(flushes.batches) < 9


async def test_a_failing_batch_is_replayed_write_by_write_so_only_the_culprit_fails() -> None:
    flushes = Flushes(delay_s=0.01, poison={"t3"})
    committer = GroupCommitter(flushes, max_inflight=1)
    results = await asyncio.gather(
        *(committer.submit(_op(i)) for i in range(6)), return_exceptions=True
    )
    failed = [i for i, r in enumerate(results) if isinstance(r, Exception)]
    assert failed == [3]
    assert isinstance(results[3], ValueError)


async def test_a_caller_cancelled_mid_flush_frees_its_slot_for_the_queued_writes() -> None:
    flushed: list[list[str]] = []
    release = asyncio.Event()

    async def flush(batch: Batch) -> None:
        flushed.append([op.thread_id for op in batch.writes])
        if len(flushed) == 1:
            await asyncio.sleep(10)  # the first flush hangs until its caller is cancelled
        await release.wait()

    committer = GroupCommitter(flush, max_inflight=1)
    first = asyncio.create_task(committer.submit(_op(0)))
    await asyncio.sleep(0.01)
    queued = asyncio.create_task(committer.submit(_op(1)))
    await asyncio.sleep(0.01)
    assert flushed == [["t0"]], "the second waits for the only slot"
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.sleep(0.01)
    assert flushed == [["t0"], ["t1"]], "the freed slot took the queued write"
    release.set()
    await queued
