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

from langgraph_resilient.checkpoint.records import Batch, Op
from langgraph_resilient.observability import metrics


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
        """Flushes so far (each one transaction): tests check that writes were batched."""

    async def submit(self, op: Op) -> None:
        """Write ``op`` durably; returns once its batch committed (raises what it raised)."""
        if not self._queue and self._inflight < self.max_inflight:
            self._inflight += 1
            self.flushes += 1
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
