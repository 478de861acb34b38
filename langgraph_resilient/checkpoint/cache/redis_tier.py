"""L2: Redis as a shared cache in front of the durable tier, and the L1 cache it validates.

What lives in Redis, per thread, under its cache keys ``{prefix}{thread_id}:<server>:`` (see
:mod:`.redis_link`, which also keeps the breaker and repairs threads written during outages):

- ``g``: the thread's cache generation. Every other key embeds it; deleting, pruning or
  repairing a thread bumps it, which makes every older entry unreachable on every replica (they
  expire by TTL) and invalidates the L1 entries keyed by the old generation.
- ``<gen>:h``: hash ``namespace -> newest checkpoint id`` (the head), only ever raised.
- ``<gen>:c:<ns>:<id>``: a checkpoint record (immutable) and its channel versions.
- ``<gen>:b:<ns>:<channel>:<version>``: a channel value (immutable).
- ``<gen>:w:<ns>:<id>``: hash of a checkpoint's pending writes. The field ``_`` marks the hash
  complete: it is set when the checkpoint is put (writes that arrived first are already in it)
  or when the hash is refilled from the durable tier; a hash without it is never trusted.

Every operation is one round trip (a Lua script, :mod:`.scripts`). L1 (:mod:`.keys`) keeps the
immutable records and values under the generation they were read at, plus the heads and
generations it last saw, which are only hints: every read asks Redis for the current ones.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langgraph_resilient._local_cache import LocalCache
from langgraph_resilient._redis.breaker import TierBreaker
from langgraph_resilient._redis.client import RedisSettings, connect, why_not_connected
from langgraph_resilient._redis.wire import ScriptCall
from langgraph_resilient._urls import redact
from langgraph_resilient.checkpoint.cache.deferred import DeferredPublication
from langgraph_resilient.checkpoint.cache.entries import (
    CachedRecord,
    CorruptEntry,
    decode_writes,
    pack,
    unpack,
    write_field,
    write_value,
)
from langgraph_resilient.checkpoint.cache.keys import GenerationKey, HeadKey, RecordKey, ValueKey
from langgraph_resilient.checkpoint.cache.redis_link import RedisLink, RedisUnavailable
from langgraph_resilient.checkpoint.cache.scripts import BUMP, PUT, READ, WITHDRAW, WRITES
from langgraph_resilient.checkpoint.durable.store import DurableStore
from langgraph_resilient.checkpoint.records import (
    EMPTY_BLOB_TYPE,
    Batch,
    CheckpointRecord,
    CheckpointRow,
    Stored,
    WriteRecord,
    is_special,
)
from langgraph_resilient.errors import TierUnavailableError
from langgraph_resilient.observability import metrics

log = logging.getLogger("langgraph_resilient.redis")


@dataclass(slots=True)
class Lookup:
    """Result of a Redis read: a full row, or a miss to fill from the durable tier.

    ``gen`` is the thread's generation when Redis answered (``None`` when it did not): a fill
    must carry it so that a concurrent delete is not undone.
    """

    row: CheckpointRow | None
    gen: str | None


class RedisTier:
    """L2 (Redis) and the L1 cache it validates: reads, publications and fills of checkpoints.
    Never raises for a Redis failure: a failed read is a miss, a failed publication marks the
    thread dirty."""

    def __init__(self, link: RedisLink, cache: LocalCache) -> None:
        self.link = link
        self.cache = cache
        link.on_new_server = cache.clear

    @property
    def breaker(self) -> TierBreaker:
        """The link's breaker (open: the saver works without Redis)."""
        return self.link.breaker

    async def invalidate(self, thread_ids: Sequence[str]) -> None:
        """Make every cached entry of these threads unreachable on every replica."""
        await self.link.invalidate(thread_ids)

    async def mark_dirty(self, thread_ids: Sequence[str]) -> None:
        """Record threads written without Redis (their cached entries may be stale)."""
        await self.link.mark_dirty(thread_ids)

    def _put_keys(self, thread_id: str) -> list[str]:
        return [self.link.gen_key(thread_id), self.link.thread_base(thread_id) + "lease"]

    # ---------------------------------------------------------------- reads

    async def read(self, thread_id: str, ns: str, checkpoint_id: str | None) -> Lookup:
        """A checkpoint from L1 + Redis in one round trip, or a miss (``row`` is None)."""

        def compose() -> list[ScriptCall]:
            known_gen = self._gen_seen(thread_id)
            if checkpoint_id is None:
                known_id = self.cache.get(HeadKey(thread_id, ns)) or ""
            else:
                known_id = checkpoint_id
            if known_id and self.cache.get(RecordKey(thread_id, known_gen, ns, known_id)) is None:
                known_id = ""
            args = [self.link.base(thread_id), ns, checkpoint_id or "", known_id, known_gen]
            return [(READ, [self.link.gen_key(thread_id)], args)]

        try:
            [reply] = await self.link.script("read", compose)
        except RedisUnavailable:
            return Lookup(None, None)
        try:
            return self._assemble(thread_id, ns, reply)
        except CorruptEntry as exc:
            log.warning("dropping corrupt cache entries of thread %r: %s", thread_id, exc)
            await self.invalidate([thread_id])
            return Lookup(None, None)

    def _assemble(self, thread_id: str, ns: str, reply: list[Any]) -> Lookup:
        gen = reply[0].decode()
        self.cache.put(GenerationKey(thread_id), gen, 16)
        if len(reply) < 3:
            return Lookup(None, gen)
        cid = reply[1].decode()
        complete, writes = decode_writes(reply[2])
        if not complete:
            return Lookup(None, gen)
        if len(reply) > 3:
            parent, body_type, body, meta_type, meta = unpack(reply[3])
            try:
                versions = json.loads(reply[4])
            except ValueError as exc:
                raise CorruptEntry("channel versions") from exc
            record = CachedRecord(parent, (body_type, body), (meta_type, meta), versions)
            self._remember_record(thread_id, gen, ns, cid, record)
            for channel, value in zip(reply[5], reply[6], strict=True):
                if value is not None:
                    ch = channel.decode()
                    typ, data = unpack(value)
                    self.cache.put(
                        ValueKey(thread_id, gen, ns, ch, versions[ch]), (typ, data), len(data)
                    )
        else:
            held: CachedRecord | None = self.cache.get(RecordKey(thread_id, gen, ns, cid))
            if held is None:
                return Lookup(None, gen)
            record = held
        blobs = []
        for channel, version in record.versions.items():
            value = self.cache.get(ValueKey(thread_id, gen, ns, channel, str(version)))
            if value is None:
                return Lookup(None, gen)
            if value[0] != EMPTY_BLOB_TYPE:
                blobs.append((channel, value[0], value[1]))
        self.cache.put(HeadKey(thread_id, ns), cid, 64)
        row = CheckpointRow(
            thread_id=thread_id,
            checkpoint_ns=ns,
            checkpoint_id=cid,
            parent_id=record.parent_id,
            body=record.body,
            metadata=record.metadata,
            blobs=blobs,
            writes=writes,
        )
        return Lookup(row, gen)

    def _gen_seen(self, thread_id: str) -> str:
        """The thread's generation as this replica last saw it ('' when it never did)."""
        seen: str | None = self.cache.get(GenerationKey(thread_id))
        return seen or ""

    def _remember_record(
        self, thread_id: str, gen: str, ns: str, cid: str, record: CachedRecord
    ) -> None:
        size = len(record.body[1]) + len(record.metadata[1]) + 64 * len(record.versions)
        self.cache.put(RecordKey(thread_id, gen, ns, cid), record, size)

    # ---------------------------------------------------------------- writes

    def _record_args(
        self,
        thread_id: str,
        ns: str,
        cid: str,
        record: CachedRecord,
        blobs: Sequence[tuple[str, str, str, bytes | None]],
        writes: Sequence[WriteRecord],
        *,
        mode: str,
        expected_gen: str,
    ) -> list[Any]:
        args: list[Any] = [
            self.link.base(thread_id),
            ns,
            cid,
            pack([record.parent_id, *record.body, *record.metadata]),
            json.dumps(record.versions),
            self.link.settings.key_ttl_s,
            mode,
            expected_gen,
            len(blobs),
        ]
        for channel, version, typ, data in blobs:
            args += [channel, version, pack([typ, data or b""])]
        for w in writes:
            args += [write_field(w), write_value(w)]
        return args

    def _remember(
        self,
        thread_id: str,
        reply: Any,
        ns: str,
        cid: str,
        record: CachedRecord,
        blobs: Sequence[tuple[str, str, str, bytes | None]],
        *,
        advance_head: bool,
    ) -> None:
        """Fill L1 with what a PUT script stored (``reply``: the generation, or nil when the
        generation moved: then forget the one we knew, the next write publishes afresh)."""
        if reply is None:
            self.cache.put(GenerationKey(thread_id), "", 16)
            return
        gen = reply.decode()
        self.cache.put(GenerationKey(thread_id), gen, 16)
        self._remember_record(thread_id, gen, ns, cid, record)
        for channel, version, typ, data in blobs:
            value = data or b""
            self.cache.put(ValueKey(thread_id, gen, ns, channel, version), (typ, value), len(value))
        if advance_head:
            self.cache.put(HeadKey(thread_id, ns), cid, 64)

    @staticmethod
    def _published(record: CheckpointRecord) -> tuple[CachedRecord, list[Any]]:
        cached = CachedRecord(
            record.parent_id, record.body, record.metadata, record.channel_versions
        )
        return cached, [(b.channel, b.version, b.type, b.data) for b in record.blobs]

    def _writes_args(
        self, thread_id: str, ns: str, cid: str, writes: Sequence[WriteRecord]
    ) -> list[Any]:
        args: list[Any] = [self.link.base(thread_id), ns, cid, self.link.settings.key_ttl_s]
        for w in writes:
            args += [write_field(w), write_value(w), "1" if is_special(w.idx) else "0"]
        return args

    async def after_put(self, record: CheckpointRecord) -> None:
        """Publish a checkpoint the durable tier acknowledged (head, record, new values)."""
        cached, blobs = self._published(record)
        tid, ns, cid = record.thread_id, record.checkpoint_ns, record.checkpoint_id

        def compose() -> list[ScriptCall]:
            args = self._record_args(
                tid, ns, cid, cached, blobs, (), mode="publish", expected_gen=self._gen_seen(tid)
            )
            return [(PUT, self._put_keys(tid), args)]

        try:
            [reply] = await self.link.script("publish", compose)
        except RedisUnavailable:
            await self.mark_dirty([tid])
            return
        self._remember(tid, reply, ns, cid, cached, blobs, advance_head=True)

    async def after_put_writes(
        self, thread_id: str, ns: str, cid: str, writes: Sequence[WriteRecord]
    ) -> None:
        """Publish writes the durable tier acknowledged."""
        try:
            await self.link.script(
                "publish_writes",
                lambda: [
                    (
                        WRITES,
                        [self.link.gen_key(thread_id)],
                        self._writes_args(thread_id, ns, cid, writes),
                    )
                ],
            )
        except RedisUnavailable:
            await self.mark_dirty([thread_id])

    async def after_batch(self, batch: Batch, stored: Stored) -> None:
        """Publish a group-committed batch: every script call in one pipelined round trip.

        Only what the durable tier ``stored`` is published. A repeated put was stored before (a
        prune may have changed it since), so its thread's cache is invalidated instead and the
        next read takes the stored version; a repeated regular write is not published at all
        (the stored one, its first value, may differ).
        """
        repeated = {
            cp.thread_id
            for cp in batch.checkpoints
            if (cp.thread_id, cp.checkpoint_ns, cp.checkpoint_id) not in stored.checkpoints
        }
        if repeated:
            await self.invalidate(sorted(repeated))
        published = [
            (cp, *self._published(cp)) for cp in batch.checkpoints if cp.thread_id not in repeated
        ]

        changed_writes = []
        for op in batch.writes:
            head = (op.thread_id, op.checkpoint_ns, op.checkpoint_id)
            writes = [w for w in op.writes if (*head, w.task_id, w.idx) in stored.writes]
            if writes:
                changed_writes.append((head, writes))
        if not published and not changed_writes:
            return

        def compose() -> list[ScriptCall]:
            calls: list[ScriptCall] = []
            for cp, cached, blobs in published:
                tid, ns, cid = cp.thread_id, cp.checkpoint_ns, cp.checkpoint_id
                args = self._record_args(
                    tid,
                    ns,
                    cid,
                    cached,
                    blobs,
                    (),
                    mode="publish",
                    expected_gen=self._gen_seen(tid),
                )
                calls.append((PUT, self._put_keys(tid), args))
            for head, writes in changed_writes:
                calls.append(
                    (WRITES, [self.link.gen_key(head[0])], self._writes_args(*head, writes))
                )
            return calls

        try:
            replies = await self.link.script("publish_batch", compose)
        except RedisUnavailable:
            threads = {cp.thread_id for cp in batch.checkpoints}
            threads |= {op.thread_id for op in batch.writes}
            await self.mark_dirty(sorted(threads))
            return
        for (cp, cached, blobs), reply in zip(published, replies, strict=False):
            self._remember(
                cp.thread_id,
                reply,
                cp.checkpoint_ns,
                cp.checkpoint_id,
                cached,
                blobs,
                advance_head=True,
            )

    async def fill(self, row: CheckpointRow, gen: str, *, head: bool) -> None:
        """Cache a row read from the durable tier (only if the generation did not move)."""
        versions = self._versions_of(row)
        record = CachedRecord(row.parent_id, row.body, row.metadata, versions)
        present = {ch for ch, _, _ in row.blobs}
        blobs: list[tuple[str, str, str, bytes | None]] = [
            (ch, versions[ch], typ, data) for ch, typ, data in row.blobs if ch in versions
        ]
        blobs += [(ch, v, EMPTY_BLOB_TYPE, None) for ch, v in versions.items() if ch not in present]
        tid, ns, cid = row.thread_id, row.checkpoint_ns, row.checkpoint_id
        mode = "fill-head" if head else "fill"

        def compose() -> list[ScriptCall]:
            args = self._record_args(
                tid, ns, cid, record, blobs, row.writes, mode=mode, expected_gen=gen
            )
            return [(PUT, self._put_keys(tid), args)]

        try:
            [reply] = await self.link.script("fill", compose)
        except RedisUnavailable:
            return
        self._remember(tid, reply, ns, cid, record, blobs, advance_head=head)

    def _versions_of(self, row: CheckpointRow) -> dict[str, str]:
        versions = row.versions
        if versions is None:
            raise CorruptEntry("row without channel versions")
        return versions

    async def withdraw(self, thread_id: str, deferred: DeferredPublication) -> bool:
        """Start deferring a lease holder's publication: bump the thread's generation (one
        round trip). False when Redis is unavailable (then publish write by write)."""
        previous = self._gen_seen(thread_id)

        def compose() -> list[ScriptCall]:
            keys = [self.link.gen_key(thread_id), self.link.thread_base(thread_id) + "epoch"]
            return [(WITHDRAW, keys, [])]

        try:
            [gen] = await self.link.script("withdraw", compose)
        except RedisUnavailable:
            return False
        deferred.gen, deferred.previous_gen = str(gen), previous
        deferred.server = self.link.server
        self.cache.put(GenerationKey(thread_id), deferred.gen, 16)
        return True

    def hold_locally(self, deferred: DeferredPublication, record: CheckpointRecord) -> None:
        """Keep a deferred checkpoint's values in L1 (under the withdrawn generation) so the
        release can publish every value the newest checkpoint needs."""
        assert deferred.gen is not None
        for b in record.blobs:
            data = b.data or b""
            key = ValueKey(
                record.thread_id, deferred.gen, record.checkpoint_ns, b.channel, b.version
            )
            self.cache.put(key, (b.type, data), len(data))

    async def publish_deferred(self, thread_id: str, deferred: DeferredPublication) -> None:
        """Publish a lease holder's newest checkpoints (all their values) and their pending
        writes in one pipelined round trip, before the lease is released."""
        gen = deferred.gen
        if gen is None or not deferred.heads:
            return
        published = []
        for ns, record in deferred.heads.items():
            cached, blobs = self._published(record)
            fresh = {b[0] for b in blobs}
            for channel, version in record.channel_versions.items():
                if channel in fresh:
                    continue
                held = self._held_blob(thread_id, deferred, ns, channel, str(version))
                if held is not None:
                    blobs.append((channel, version, held[0], held[1]))
            writes = deferred.final_writes(ns, record.checkpoint_id)
            published.append((record, cached, blobs, writes))

        def compose() -> list[ScriptCall]:
            if self.link.server != deferred.server:
                # Another server: its cache was never withdrawn and L1 (which held the values)
                # was cleared. Make whatever it caches of the thread unreachable instead.
                published.clear()
                return [(BUMP, [self.link.gen_key(thread_id)], [])]
            return [
                (
                    PUT,
                    self._put_keys(thread_id),
                    self._record_args(
                        thread_id,
                        record.checkpoint_ns,
                        record.checkpoint_id,
                        cached,
                        blobs,
                        writes,
                        mode="publish",
                        expected_gen=gen,
                    ),
                )
                for record, cached, blobs, writes in published
            ]

        try:
            replies = await self.link.script("publish_deferred", compose)
        except RedisUnavailable:
            await self.mark_dirty([thread_id])
            return
        for (record, cached, blobs, _), reply in zip(published, replies, strict=False):
            self._remember(
                thread_id, reply, record.checkpoint_ns, record.checkpoint_id, cached, blobs,
                advance_head=True,
            )  # fmt: skip

    def _held_blob(
        self, thread_id: str, deferred: DeferredPublication, ns: str, channel: str, version: str
    ) -> tuple[str, bytes] | None:
        """A value L1 holds from before the lease or from during it (values never change, so
        an entry of the older generation is still the right value)."""
        for gen in (deferred.gen, deferred.previous_gen):
            if gen is None:
                continue
            held: tuple[str, bytes] | None = self.cache.get(
                ValueKey(thread_id, gen, ns, channel, version)
            )
            if held is not None:
                return held
        return None


async def open_redis_tier(
    settings: RedisSettings,
    *,
    prefix: str,
    store: DurableStore,
    cache_max_bytes: int,
    required: bool,
) -> RedisTier:
    """Connect the Redis tier (and start its repair loop). Redis unreachable: with
    ``required``, :class:`TierUnavailableError`; else the tier starts with its breaker open and
    uses Redis once it answers."""
    client = connect(settings)
    link = RedisLink(client, settings, prefix=prefix, store=store)
    tier = RedisTier(link, LocalCache(cache_max_bytes))
    try:
        async with asyncio.timeout(settings.connect_timeout_s * 2):
            await client.ping()
        async with asyncio.timeout(settings.connect_timeout_s * 2):
            await link.connect()
    except Exception as exc:
        why = why_not_connected(exc, settings)
        if required:
            await link.stop()
            raise TierUnavailableError(
                "redis", f"cannot connect to {redact(settings.url)}: {why}"
            ) from exc
        log.warning(
            "cannot use Redis at %s, starting without it (it is used once it answers): %s",
            redact(settings.url),
            why,
        )
        link.breaker.trip()
        metrics.CHECKPOINT_REDIS_AVAILABLE.set(0)
    link.start()
    return tier
