"""Group commit: concurrent writes share one transaction and one round trip.

A write that finds a free flush slot and no queue goes out at once, from its caller's own task,
so a lone writer waits for nothing. Writes that arrive while every slot is busy queue up and
leave together in the next flush: under load, many graph steps of many threads commit in one
statement instead of one each. Every caller still learns the outcome
of its own write: a flush that fails is replayed write by write, so one bad write fails alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from langgraph_resilient.checkpoint.records import CheckpointRecord, WriteRecord
from langgraph_resilient.observability import metrics


@dataclass(slots=True)
class WritesOp:
    """One ``put_writes`` call."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    writes: list[WriteRecord]
    epoch: int | None = None
    """Fencing epoch of the lease it was made under, or ``None`` (unfenced)."""


Op = CheckpointRecord | WritesOp


@dataclass(slots=True)
class Batch:
    """Writes flushed together: checkpoints and pending writes, in arrival order."""

    checkpoints: list[CheckpointRecord] = field(default_factory=list)
    writes: list[WritesOp] = field(default_factory=list)

    @classmethod
    def of(cls, op: Op) -> Batch:
        """A batch of one write."""
        batch = cls()
        batch.add(op)
        return batch

    def add(self, op: Op) -> None:
        if isinstance(op, WritesOp):
            self.writes.append(op)
        else:
            self.checkpoints.append(op)

    def __len__(self) -> int:
        return len(self.checkpoints) + len(self.writes)


class GroupCommitter:
    """Coalesces concurrent writes into batches, at most ``max_inflight`` flushes at a time."""

    def __init__(
        self,
        flush: Callable[[Batch], Awaitable[None]],
        *,
        max_inflight: int = 4,
        max_batch: int = 256,
    ) -> None:
        self._flush = flush
        self.max_inflight = max_inflight
        self.max_batch = max_batch
        self._queue: list[tuple[Op, asyncio.Future[None]]] = []
        self._inflight = 0
        self._scheduled = False
        self.flushes = 0
        self.ops = 0

    async def submit(self, op: Op) -> None:
        """Write ``op`` durably; returns once its batch committed (raises what it raised)."""
        if not self._queue and self._inflight < self.max_inflight:
            self._inflight += 1
            self.flushes += 1
            self.ops += 1
            metrics.CHECKPOINT_BATCH_SIZE.observe(1)
            try:
                await self._flush(Batch.of(op))
            finally:
                self._inflight -= 1
                self._schedule()
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((op, future))
        self._schedule()
        await future

    def _schedule(self) -> None:
        if self._queue and not self._scheduled and self._inflight < self.max_inflight:
            # One loop turn of grace: writes submitted by tasks woken in this turn join in.
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start_flush)

    def _start_flush(self) -> None:
        self._scheduled = False
        if not self._queue or self._inflight >= self.max_inflight:
            return
        taken, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
        self._inflight += 1
        asyncio.get_running_loop().create_task(self._run(taken))

    async def _run(self, taken: Sequence[tuple[Op, asyncio.Future[None]]]) -> None:
        try:
            batch = Batch()
            for op, _ in taken:
                batch.add(op)
            self.flushes += 1
            self.ops += len(taken)
            metrics.CHECKPOINT_BATCH_SIZE.observe(len(taken))
            try:
                await self._flush(batch)
            except BaseException as exc:
                if len(taken) == 1 or isinstance(exc, asyncio.CancelledError):
                    for _, future in taken:
                        _settle(future, exc)
                    return
                # Isolate the culprit: every write alone, each caller gets its own outcome.
                await asyncio.gather(*(self._alone(op, future) for op, future in taken))
                return
            for _, future in taken:
                _settle(future, None)
        finally:
            self._inflight -= 1
            self._schedule()

    async def _alone(self, op: Op, future: asyncio.Future[None]) -> None:
        try:
            await self._flush(Batch.of(op))
        except BaseException as exc:
            _settle(future, exc)
        else:
            _settle(future, None)


def _settle(future: asyncio.Future[None], exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)


@dataclass(slots=True)
class Stored:
    """What a batch really changed in the durable tier: the checkpoints it inserted (a repeated
    one was stored before) and the writes it inserted or, for special channels, replaced (a
    repeated regular write keeps its first value). Only these may be published to a cache."""

    checkpoints: set[tuple[str, str, str]] = field(default_factory=set)
    writes: set[tuple[str, str, str, str, int]] = field(default_factory=set)
    """``(thread, ns, checkpoint, task_id, idx)``."""


BlobRow = tuple[str, str, str, str, str, bytes | None]
WriteRow = tuple[str, str, str, str, str, int, str, str, bytes]


def blob_rows(batch: Batch) -> list[BlobRow]:
    """``(thread, ns, channel, version, type, data)`` of a batch, each key once (first wins:
    a channel version never changes)."""
    rows: dict[tuple[str, str, str, str], BlobRow] = {}
    for cp in batch.checkpoints:
        for b in cp.blobs:
            key = (cp.thread_id, cp.checkpoint_ns, b.channel, b.version)
            rows.setdefault(key, (*key, b.type, b.data))
    return list(rows.values())


def write_rows(batch: Batch) -> list[WriteRow]:
    """``(thread, ns, checkpoint, task, path, idx, channel, type, data)`` of a batch, each key
    once: a regular write keeps its first value, a special one (idx < 0) its last, exactly as
    separate statements would leave them."""
    rows: dict[tuple[str, str, str, str, int], WriteRow] = {}
    for op in batch.writes:
        for w in op.writes:
            key = (op.thread_id, op.checkpoint_ns, op.checkpoint_id, w.task_id, w.idx)
            if w.idx >= 0 and key in rows:
                continue
            rows[key] = (*key[:4], w.task_path, w.idx, w.channel, w.type, w.data)
    return list(rows.values())


def checkpoint_records(batch: Batch) -> list[CheckpointRecord]:
    """The batch's checkpoints, each key once (the first: a checkpoint never changes)."""
    seen: dict[tuple[str, str, str], CheckpointRecord] = {}
    for cp in batch.checkpoints:
        seen.setdefault((cp.thread_id, cp.checkpoint_ns, cp.checkpoint_id), cp)
    return list(seen.values())


class MixedEpochs(Exception):
    """A fenced batch holds writes of one thread under two epochs (a lease was taken over
    while its writes were queued): it must be replayed write by write, so that the older
    epoch's writes are refused."""


def fence_epochs(batch: Batch) -> dict[str, int]:
    """The epoch each thread of a fenced batch writes under."""
    epochs: dict[str, int] = {}
    for thread_id, epoch in [
        *((c.thread_id, c.epoch) for c in batch.checkpoints),
        *((w.thread_id, w.epoch) for w in batch.writes),
    ]:
        if epoch is None or epochs.setdefault(thread_id, epoch) != epoch:
            raise MixedEpochs(thread_id)
    return epochs
