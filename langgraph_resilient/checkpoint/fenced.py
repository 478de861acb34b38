"""``FencedWrites``: the writes a lease holder makes, and what it tells Redis about them.

While this process holds a thread's lease (``lock_thread``), every ``put`` and ``put_writes``
to the thread carries the lease's epoch. They are group-committed by their own committer: one
statement checks every thread's fence and every namespace's head and writes all or nothing; a
refused batch is replayed write by write, so each writer gets its own ``StaleLeaseError`` or
``ForkedHistoryError``.

With the lease in Redis the holder is the thread's only writer, so it publishes to Redis once,
at release, instead of at every write (:class:`DeferredPublication`): at its first write it
withdraws the thread's cached entries (fills are refused while the lease key exists), and
before the lease key goes it publishes each namespace's newest checkpoint with its values and
writes. If it dies first, the entries stay withdrawn and readers go to the durable tier.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from langgraph_resilient.checkpoint.batcher import GroupCommitter
from langgraph_resilient.checkpoint.cache.deferred import DeferredPublication
from langgraph_resilient.checkpoint.cache.redis_tier import RedisTier
from langgraph_resilient.checkpoint.records import Batch, CheckpointRecord, Op, WritesOp
from langgraph_resilient.checkpoint.tiers import Tiers

log = logging.getLogger("langgraph_resilient.redis")


class FencedWrites:
    """The epochs this process holds, their group-committed writes and deferred publications."""

    def __init__(self, tiers: Tiers) -> None:
        self.tiers = tiers
        self._epochs: dict[str, int] = {}
        self._deferred: dict[str, DeferredPublication] = {}
        self.committer = GroupCommitter(self._flush, max_inflight=tiers.store.write_parallelism)
        """The group committer of fenced writes (its counters are for tests and diagnostics)."""

    # ---------------------------------------------------------------- the lease's side

    def epoch_of(self, thread_id: str) -> int | None:
        """The epoch of the lease this process holds on ``thread_id`` (``None``: no lease, so
        its writes are not fenced)."""
        return self._epochs.get(thread_id)

    def hold(self, thread_id: str, epoch: int, in_redis: Callable[[], bool]) -> None:
        """A lease was taken: fence the thread's writes with ``epoch`` from now on; with the
        lease in Redis (``in_redis`` says whether it still is), defer its publication."""
        self._epochs[thread_id] = epoch
        if self.tiers.redis is not None and in_redis():
            self._deferred[thread_id] = DeferredPublication(in_redis=in_redis)

    async def publish_before_release(self, thread_id: str, *, lost: bool) -> None:
        """The lease is about to let go of its Redis key: publish what was deferred (nothing
        when the lease was ``lost``: a newer holder owns the thread). Never raises."""
        deferred = self._deferred.pop(thread_id, None)
        tier = self.tiers.redis
        if deferred is None or tier is None or deferred.failed or lost:
            return
        try:
            await tier.publish_deferred(thread_id, deferred)
        except Exception:  # the lease must be released whatever happens here
            log.exception("publishing thread %r at lease release failed", thread_id)
            await tier.mark_dirty([thread_id])

    def held(self) -> dict[str, int]:
        """The epoch of every lease this process holds, by thread (a copy)."""
        return dict(self._epochs)

    def forget(self, thread_id: str, epoch: int) -> None:
        """The lease with ``epoch`` is gone: the thread's writes are plain again."""
        if self._epochs.get(thread_id) == epoch:
            del self._epochs[thread_id]

    # ---------------------------------------------------------------- writes

    async def submit(self, op: Op) -> None:
        """Write a fenced checkpoint or writes op durably (raises what its fence raised)."""
        await self.committer.submit(op)

    async def _flush(self, batch: Batch) -> None:
        retrying, store = self.tiers.retrying, self.tiers.store
        if len(batch) == 1:
            if batch.checkpoints:
                record = batch.checkpoints[0]
                inserted = await retrying("put", lambda: store.put_checkpoint(record), write=True)
                await self._after_put(record, inserted)
            else:
                op = batch.writes[0]
                assert op.epoch is not None
                epoch = op.epoch
                stored_keys = await retrying(
                    "put_writes",
                    lambda: store.put_writes(
                        op.thread_id, op.checkpoint_ns, op.checkpoint_id, op.writes, epoch
                    ),
                    write=True,
                )
                await self._after_writes(op, stored_keys)
            return
        stored = await retrying("fenced batch", lambda: store.write_fenced_batch(batch), write=True)
        for record in batch.checkpoints:
            key = (record.thread_id, record.checkpoint_ns, record.checkpoint_id)
            await self._after_put(record, key in stored.checkpoints)
        by_head: dict[tuple[str, str, str], set[tuple[str, int]]] = {}
        for tid, ns, cid, task_id, idx in stored.writes:  # once, not once per op
            by_head.setdefault((tid, ns, cid), set()).add((task_id, idx))
        for op in batch.writes:
            head = (op.thread_id, op.checkpoint_ns, op.checkpoint_id)
            await self._after_writes(op, by_head.get(head, set()))

    # ---------------------------------------------------------------- publication

    async def _after_put(self, record: CheckpointRecord, inserted: bool) -> None:
        tier = self.tiers.redis
        if tier is None:
            return
        if not inserted:  # stored before, maybe changed since (a prune): never cache it as sent
            deferred = self._deferred.get(record.thread_id)
            if deferred is not None:
                deferred.failed = True  # its release must not publish an older head instead
            await tier.invalidate([record.thread_id])
            return
        deferred = await self._deferring(tier, record.thread_id)
        if deferred is not None:
            deferred.add_checkpoint(record)
            tier.hold_locally(deferred, record)
            return
        await tier.after_put(record)

    async def _after_writes(self, op: WritesOp, stored: set[tuple[str, int]]) -> None:
        tier = self.tiers.redis
        # a repeated regular write keeps its first value: only what was stored is published
        changed = [r for r in op.writes if (r.task_id, r.idx) in stored]
        if tier is None or not changed:
            return
        deferred = await self._deferring(tier, op.thread_id)
        if deferred is not None:
            deferred.add_writes(op.checkpoint_ns, op.checkpoint_id, changed)
            return
        await tier.after_put_writes(op.thread_id, op.checkpoint_ns, op.checkpoint_id, changed)

    async def _deferring(self, tier: RedisTier, thread_id: str) -> DeferredPublication | None:
        """The deferred publication of a thread this process leases in Redis, withdrawing its
        cached entries at the first write; None: publish this write now."""
        deferred = self._deferred.get(thread_id)
        if deferred is None or deferred.failed:
            return None
        if not deferred.in_redis():
            deferred.failed = True  # the lease moved to the durable store: publish per write
            return None
        if deferred.gen is None:
            # Concurrent writes of one step (a put and put_writes) withdraw only once.
            async with deferred.withdrawing:
                if deferred.gen is None and not await tier.withdraw(thread_id, deferred):
                    deferred.failed = True
                    return None
        return None if deferred.failed else deferred
