"""``WritePath``: how the saver's writes reach the durable tier, then Redis.

A write is acknowledged only once the durable tier committed it. Plain (unfenced) writes are
group-committed: concurrent ``put``/``put_writes`` calls of many threads share one statement
(:mod:`.batcher`). Redis is told of the write in parallel with the commit (an announcement,
which keeps readers away from the thread's cached entries), and what the store really changed
is published after the acknowledgement (:mod:`.cache.publication`). Writes to a thread this
process leases go through :class:`FencedWrites` instead.
History-changing writes (delete, copy, prune) invalidate the threads' cached entries on every
replica after they commit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from langgraph_resilient.checkpoint.batcher import GroupCommitter
from langgraph_resilient.checkpoint.fenced import FencedWrites
from langgraph_resilient.checkpoint.records import Batch, CheckpointRecord, WriteRecord, WritesOp
from langgraph_resilient.checkpoint.tiers import Tiers

T = TypeVar("T")


class WritePath:
    """Routes each write to the plain or the fenced committer, and invalidates after rewrites."""

    def __init__(self, tiers: Tiers, fenced: FencedWrites) -> None:
        self.tiers = tiers
        self.fenced = fenced
        self._committer = GroupCommitter(self._flush, max_inflight=tiers.store.write_parallelism)

    async def put(self, record: CheckpointRecord) -> None:
        """Store a checkpoint (fenced when ``record.epoch`` is set)."""
        if record.epoch is None:
            await self._committer.submit(record)
        else:
            await self.fenced.submit(record)

    async def put_writes(
        self, thread_id: str, ns: str, checkpoint_id: str, writes: list[WriteRecord]
    ) -> None:
        """Store a task's pending writes (fenced while this process leases the thread)."""
        epoch = self.fenced.epoch_of(thread_id)
        op = WritesOp(thread_id, ns, checkpoint_id, writes, epoch)
        if epoch is None:
            await self._committer.submit(op)
        else:
            await self.fenced.submit(op)

    async def rewrite(self, op: str, call: Callable[[], Awaitable[T]], threads: list[str]) -> T:
        """A history-changing write, then the cache tiers of ``threads`` invalidated."""
        result = await self.tiers.retrying(op, call, write=True)
        await self.invalidate(threads)
        return result

    async def invalidate(self, threads: Sequence[str]) -> None:
        """Make every cached entry of ``threads`` unreachable on every replica."""
        if self.tiers.redis is not None:
            await self.tiers.redis.invalidate(threads)

    async def _flush(self, batch: Batch) -> None:
        """Group commit: a batch of plain writes in one transaction, then in Redis."""
        op = " + ".join(
            name
            for name, part in (("put", batch.checkpoints), ("put_writes", batch.writes))
            if part
        )
        store, tier = self.tiers.store, self.tiers.redis
        if tier is None:
            await self.tiers.retrying(op, lambda: store.write_batch(batch), write=True)
            return
        threads = [cp.thread_id for cp in batch.checkpoints] + [w.thread_id for w in batch.writes]
        announcement = tier.announce(threads)
        try:
            stored = await self.tiers.retrying(op, lambda: store.write_batch(batch), write=True)
        except BaseException:
            await tier.abandon(announcement)
            raise
        if await tier.confirm(announcement):
            tier.publish(batch, stored, announcement)
