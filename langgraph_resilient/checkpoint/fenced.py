"""``FencedWrites``: the writes a lease holder makes, and what it tells Redis about them.

While this process holds a thread's lease (``lock_thread``), every ``put`` and ``put_writes``
to the thread carries the lease's epoch. They are group-committed by their own committer: one
statement checks every thread's fence and every namespace's head and writes all or nothing; a
refused batch is replayed write by write, so each writer gets its own ``StaleLeaseError`` or
``ForkedHistoryError``.

With the lease in Redis the holder is the thread's only writer and its lease's token keeps
every other reader away from what Redis holds for the thread (:class:`DeferredPublication`),
so its writes touch Redis not at all: it publishes once, at release. Without that guard (the
lease lives in the durable store, or Redis failed for the holder) its writes are announced and
published like plain ones.
"""

from __future__ import annotations

import logging

from langgraph_resilient.checkpoint.batcher import GroupCommitter
from langgraph_resilient.checkpoint.cache.deferred import DeferredPublication
from langgraph_resilient.checkpoint.cache.redis_tier import RedisTier
from langgraph_resilient.checkpoint.records import Batch, Op, Stored
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

    def hold(self, thread_id: str, epoch: int, deferred: DeferredPublication | None) -> None:
        """A lease was taken: fence the thread's writes with ``epoch`` from now on; with the
        lease's token guarding the thread in Redis (``deferred``), defer their publication."""
        self._epochs[thread_id] = epoch
        if deferred is not None and self.tiers.redis is not None:
            self._deferred[thread_id] = deferred

    def deferred_of(self, thread_id: str) -> DeferredPublication | None:
        """The publication this process defers for a thread it leases (``None``: none, or it
        stopped deferring: Redis is not to be trusted for the thread until the release)."""
        deferred = self._deferred.get(thread_id)
        return None if deferred is None or deferred.failed else deferred

    async def publish_before_release(self, thread_id: str, *, lost: bool) -> bool:
        """The lease is about to let go of its Redis key: publish what was deferred (nothing
        when the lease was ``lost``: a newer holder owns the thread). Returns whether Redis
        then holds nothing stale of the thread (else the release bumps its generation).
        Never raises."""
        deferred = self._deferred.pop(thread_id, None)
        if deferred is None:
            return True
        tier = self.tiers.redis
        if tier is None or deferred.failed or lost:
            return False
        if not deferred.wrote:
            return True
        try:
            return await tier.publish_deferred(thread_id, deferred)
        except Exception:  # the lease must be released whatever happens here
            log.exception("publishing thread %r at lease release failed", thread_id)
            await tier.mark_dirty([thread_id])
            return False

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
        tier = self.tiers.redis
        if tier is None:
            await self._commit(batch)
            return
        threads = {cp.thread_id for cp in batch.checkpoints} | {w.thread_id for w in batch.writes}
        deferring: dict[str, DeferredPublication] = {}
        for tid in threads:
            deferred = self._deferred.get(tid)
            if deferred is not None and deferred.guarded():
                deferring[tid] = deferred
            elif deferred is not None:
                deferred.failed = True  # the guard is gone: publish per write from now on
        announced = sorted(threads - deferring.keys())
        announcement = tier.announce(announced) if announced else None
        try:
            stored = await self._commit(batch)
        except BaseException:
            if announcement is not None:
                await tier.abandon(announcement)
            raise
        await self._defer(tier, batch, stored, deferring)
        if announcement is not None and await tier.confirm(announcement):
            keep = set(announced)
            tier.publish(
                Batch(
                    [cp for cp in batch.checkpoints if cp.thread_id in keep],
                    [op for op in batch.writes if op.thread_id in keep],
                ),
                stored,
                announcement,
            )

    async def _commit(self, batch: Batch) -> Stored:
        retrying, store = self.tiers.retrying, self.tiers.store
        if len(batch) > 1:
            return await retrying(
                "fenced batch", lambda: store.write_fenced_batch(batch), write=True
            )
        stored = Stored()
        if batch.checkpoints:
            record = batch.checkpoints[0]
            if await retrying("put", lambda: store.put_checkpoint(record), write=True):
                stored.checkpoints.add(
                    (record.thread_id, record.checkpoint_ns, record.checkpoint_id)
                )
            return stored
        op = batch.writes[0]
        assert op.epoch is not None
        epoch = op.epoch
        keys = await retrying(
            "put_writes",
            lambda: store.put_writes(
                op.thread_id, op.checkpoint_ns, op.checkpoint_id, op.writes, epoch
            ),
            write=True,
        )
        head = (op.thread_id, op.checkpoint_ns, op.checkpoint_id)
        stored.writes.update((*head, task_id, idx) for task_id, idx in keys)
        return stored

    async def _defer(
        self,
        tier: RedisTier,
        batch: Batch,
        stored: Stored,
        deferring: dict[str, DeferredPublication],
    ) -> None:
        """Keep what a batch wrote to guarded threads for their release (no Redis), unless the
        commit outlived the guard: then make the thread's cached entries unreachable before
        the write is acknowledged."""
        outlived = sorted(tid for tid, deferred in deferring.items() if not deferred.guarded())
        for tid in outlived:
            deferring.pop(tid).failed = True
        if outlived:
            await tier.invalidate(outlived)
        for record in batch.checkpoints:
            deferred = deferring.get(record.thread_id)
            if deferred is None:
                continue
            key = (record.thread_id, record.checkpoint_ns, record.checkpoint_id)
            if key not in stored.checkpoints:
                # Stored before, maybe changed since (a prune): its release must not publish
                # an older head instead; the token keeps readers away until then.
                deferred.failed = True
                continue
            deferred.add_checkpoint(record)
            tier.hold_locally(deferred, record)
        for op in batch.writes:
            deferred = deferring.get(op.thread_id)
            if deferred is None:
                continue
            head = (op.thread_id, op.checkpoint_ns, op.checkpoint_id)
            # a repeated regular write keeps its first value: only what was stored is kept
            changed = [w for w in op.writes if (*head, w.task_id, w.idx) in stored.writes]
            if changed:
                deferred.add_writes(op.checkpoint_ns, op.checkpoint_id, changed)
