"""What a lease holder's Redis tier does for it: keep what it wrote in L1, serve its reads of
that, and publish it all at release (see :class:`~.deferred.DeferredPublication`)."""

from __future__ import annotations

from langgraph_resilient._redis.wire import ScriptCall
from langgraph_resilient.checkpoint.cache.deferred import DeferredPublication
from langgraph_resilient.checkpoint.cache.keys import ValueKey
from langgraph_resilient.checkpoint.cache.redis_link import RedisUnavailable
from langgraph_resilient.checkpoint.cache.scripts import BUMP, INDEX, PUT
from langgraph_resilient.checkpoint.cache.tier_base import TierBase
from langgraph_resilient.checkpoint.records import EMPTY_BLOB_TYPE, CheckpointRecord, CheckpointRow


class HolderPublication(TierBase):
    """The lease holder's side of the Redis tier."""

    def hold_locally(self, deferred: DeferredPublication, record: CheckpointRecord) -> None:
        """Keep a deferred checkpoint's values in L1 so the holder reads the thread from this
        process and its release can publish every value the newest checkpoint needs."""
        for b in record.blobs:
            data = b.data or b""
            key = ValueKey(
                record.thread_id, deferred.gen, record.checkpoint_ns, b.channel, b.version
            )
            self.cache.put(key, (b.type, data), len(data))

    def held_row(
        self, deferred: DeferredPublication, ns: str, checkpoint_id: str | None
    ) -> CheckpointRow | None:
        """A checkpoint the holder wrote under the lease, from this process alone (``None``:
        not one of its newest, or a value is no longer in L1: read the durable tier)."""
        record = deferred.heads.get(ns)
        if record is None or checkpoint_id not in (None, record.checkpoint_id):
            return None
        blobs = self._all_values(deferred, record)
        if blobs is None:
            return None
        return CheckpointRow(
            thread_id=record.thread_id,
            checkpoint_ns=ns,
            checkpoint_id=record.checkpoint_id,
            parent_id=record.parent_id,
            body=record.body,
            metadata=record.metadata,
            blobs=[(ch, typ, data or b"") for ch, _, typ, data in blobs if typ != EMPTY_BLOB_TYPE],
            writes=deferred.final_writes(ns, record.checkpoint_id),
            versions=dict(record.channel_versions),
        )

    def _all_values(
        self, deferred: DeferredPublication, record: CheckpointRecord
    ) -> list[tuple[str, str, str, bytes | None]] | None:
        """Every value a checkpoint references: its own new ones, the others from L1 (values
        never change, so what L1 holds under the acquisition's generation is right)."""
        _, blobs = self._published(record)
        fresh = {b[0] for b in blobs}
        for channel, version in record.channel_versions.items():
            if channel in fresh:
                continue
            held: tuple[str, bytes] | None = self.cache.get(
                ValueKey(record.thread_id, deferred.gen, record.checkpoint_ns, channel, version)
            )
            if held is None:
                return None
            blobs.append((channel, version, held[0], held[1]))
        return blobs

    async def publish_deferred(self, thread_id: str, deferred: DeferredPublication) -> bool:
        """Publish what a lease holder wrote, in one pipelined round trip before the lease
        (and its token in the writes in flight) is released: its newest checkpoints of each
        namespace with their writes (the head with all its values), and the writes it added to
        checkpoints from before the lease. Returns whether Redis holds it all (False: the
        thread was recorded dirty)."""
        published = []
        for ns, recent in deferred.recent.items():
            head = deferred.heads[ns]
            for record in recent:
                cached, blobs = self._published(record)
                if record is head:
                    held = self._all_values(deferred, record)
                    if held is None:  # L1 evicted a value: the head cannot be published whole
                        await self.mark_dirty([thread_id])
                        return False
                    blobs = held
                writes = deferred.final_writes(ns, record.checkpoint_id)
                published.append((record, cached, blobs, writes))
        older = deferred.older_writes()
        if not published and not older:
            return True

        def compose() -> list[ScriptCall]:
            if self.link.server != deferred.server:
                # Another server: its cache was never guarded by the lease's token and L1
                # (which held the values) was cleared. Make what it caches unreachable instead.
                published.clear()
                return [(BUMP, [self.link.gen_key(thread_id)], [])]
            keys = self.link.tier_keys(thread_id)
            calls: list[ScriptCall] = []
            for record, cached, blobs, writes in published:
                ns, cid = record.checkpoint_ns, record.checkpoint_id
                args = self._record_args(
                    thread_id, ns, cid, cached, blobs, writes, mode="publish-all",
                    expected_gen=deferred.gen,
                )  # fmt: skip
                calls.append((PUT, keys, args))
            for ns, cid in older:
                writes = deferred.final_writes(ns, cid)
                calls.append(self._writes_call(deferred.gen, thread_id, ns, cid, writes, ""))
            base = self.link.base(thread_id)
            for ns in deferred.overflow:
                calls.append((INDEX, keys, [base, ns, "drop", deferred.gen, "", "", "", 0]))
            return calls

        try:
            replies = await self.publications.send_with("publish_deferred", compose)
        except RedisUnavailable:
            await self.mark_dirty([thread_id])
            return False
        for (record, cached, blobs, _), reply in zip(published, replies, strict=False):
            newest = deferred.heads[record.checkpoint_ns] is record
            self._remember(
                thread_id, reply, record.checkpoint_ns, record.checkpoint_id, cached, blobs,
                advance_head=newest,
            )  # fmt: skip
        return True
