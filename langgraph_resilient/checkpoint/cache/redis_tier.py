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
- ``f`` and ``s``: the writes in flight (announced, not yet published) and the write sequence.
  While a write is in flight no reader trusts Redis for the thread, and a fill is accepted only
  if no write was announced since its read (:mod:`.publication`): so a write is acknowledged
  after its commit without waiting for its publication.

Every operation is one round trip (a Lua script, :mod:`.scripts`); publications ride along
with the next one. L1 (:mod:`.keys`) keeps the immutable records and values under the
generation they were read at, plus the heads and generations it last saw, which are only
hints: every read asks Redis for the current ones.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable, Sequence
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
from langgraph_resilient.checkpoint.cache.publication import Announcement, Pending, Publications
from langgraph_resilient.checkpoint.cache.redis_link import RedisLink, RedisUnavailable
from langgraph_resilient.checkpoint.cache.scripts import ABANDON, BUMP, PUT, READ, SETTLE, WRITES
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

    ``gen`` is the thread's generation when Redis answered (``None`` when it did not) and
    ``seq`` its write sequence (``""`` while a write was in flight: nothing to fill). A fill
    carries both, so that neither a concurrent delete nor a concurrent write is undone.
    """

    row: CheckpointRow | None
    gen: str | None
    seq: str = ""

    @property
    def fillable(self) -> bool:
        """Whether a row read from the durable tier after this miss may be cached."""
        return self.gen is not None and self.seq != ""


class RedisTier:
    """L2 (Redis) and the L1 cache it validates: reads, publications and fills of checkpoints.
    Never raises for a Redis failure: a failed read is a miss, a failed publication marks the
    thread dirty."""

    def __init__(self, link: RedisLink, cache: LocalCache) -> None:
        self.link = link
        self.cache = cache
        self.publications = Publications(link, self.mark_dirty)
        """Publications waiting for the next round trip (sent after the acknowledgement)."""
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

    async def close(self) -> None:
        """Send the queued publications (bounded in time), then stop the link."""
        try:
            await self.publications.drain(self.link.settings.connect_timeout_s * 2)
        finally:
            await self.link.stop()

    # ---------------------------------------------------------------- reads

    async def read(
        self, thread_id: str, ns: str, checkpoint_id: str | None, *, own_token: str = ""
    ) -> Lookup:
        """A checkpoint from L1 + Redis in one round trip, or a miss (``row`` is None).
        ``own_token``: the caller's lease token in the thread's writes in flight (a holder that
        has not written yet), which does not make the thread busy for it."""

        def compose() -> list[ScriptCall]:
            known_gen = self._gen_seen(thread_id)
            if checkpoint_id is None:
                known_id = self.cache.get(HeadKey(thread_id, ns)) or ""
            else:
                known_id = checkpoint_id
            if known_id and self.cache.get(RecordKey(thread_id, known_gen, ns, known_id)) is None:
                known_id = ""
            args = [
                self.link.base(thread_id), ns, checkpoint_id or "", known_id, known_gen, own_token
            ]  # fmt: skip
            return [(READ, self.link.tier_keys(thread_id), args)]

        try:
            [reply] = await self.publications.send_with("read", compose)
        except RedisUnavailable:
            return Lookup(None, None)
        try:
            return self._assemble(thread_id, ns, reply)
        except CorruptEntry as exc:
            log.warning("dropping corrupt cache entries of thread %r: %s", thread_id, exc)
            await self.invalidate([thread_id])
            return Lookup(None, None)

    async def look_up(
        self, thread_id: str, ns: str, checkpoint_id: str | None, held: DeferredPublication | None
    ) -> Lookup:
        """A checkpoint from the caches. A lease holder (``held``: its deferred publication)
        reads what it wrote from this process (Redis has not seen it yet) and the rest from
        Redis, past its own lease's guard."""
        if held is None:
            return await self.read(thread_id, ns, checkpoint_id)
        if held.touched(ns):
            return Lookup(self.held_row(held, ns, checkpoint_id), None)
        return await self.read(thread_id, ns, checkpoint_id, own_token=held.token)

    def _assemble(self, thread_id: str, ns: str, reply: list[Any]) -> Lookup:
        gen, seq = reply[0].decode(), reply[1].decode()
        self.cache.put(GenerationKey(thread_id), gen, 16)
        if len(reply) < 4:
            return Lookup(None, gen, seq)
        cid = reply[2].decode()
        complete, writes = decode_writes(reply[3])
        if not complete:
            return Lookup(None, gen, seq)
        if len(reply) > 4:
            parent, body_type, body, meta_type, meta = unpack(reply[4])
            try:
                versions = json.loads(reply[5])
            except ValueError as exc:
                raise CorruptEntry("channel versions") from exc
            record = CachedRecord(parent, (body_type, body), (meta_type, meta), versions)
            self._remember_record(thread_id, gen, ns, cid, record)
            for channel, value in zip(reply[6], reply[7], strict=True):
                if value is not None:
                    ch = channel.decode()
                    typ, data = unpack(value)
                    self.cache.put(
                        ValueKey(thread_id, gen, ns, ch, versions[ch]), (typ, data), len(data)
                    )
        else:
            held: CachedRecord | None = self.cache.get(RecordKey(thread_id, gen, ns, cid))
            if held is None:
                return Lookup(None, gen, seq)
            record = held
        blobs = []
        for channel, version in record.versions.items():
            value = self.cache.get(ValueKey(thread_id, gen, ns, channel, str(version)))
            if value is None:
                return Lookup(None, gen, seq)
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
        return Lookup(row, gen, seq)

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
        expected_seq: str = "",
        token: str = "",
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
            expected_seq,
            token,
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

    def _writes_call(
        self,
        gen: str,
        thread_id: str,
        ns: str,
        cid: str,
        writes: Sequence[WriteRecord],
        token: str,
    ) -> ScriptCall:
        args: list[Any] = [
            self.link.base(thread_id), ns, cid, self.link.settings.key_ttl_s, token, gen
        ]  # fmt: skip
        for w in writes:
            args += [write_field(w), write_value(w), "1" if is_special(w.idx) else "0"]
        return (WRITES, self.link.tier_keys(thread_id), args)

    def announce(self, thread_ids: Sequence[str]) -> Announcement:
        """Announce writes to these threads, in parallel with their commit (see
        :mod:`.publication`): await :meth:`confirm` after the commit, before acknowledging."""
        return self.publications.announce(thread_ids)

    async def confirm(self, announcement: Announcement) -> bool:
        """Whether the writes may be published under the announcement (False: the threads
        were recorded dirty or their generations bumped, nothing to publish)."""
        return await self.publications.confirm(announcement)

    async def abandon(self, announcement: Announcement) -> None:
        """The announced commit failed: its threads' cached entries become unreachable."""
        await self.publications.abandon(announcement)

    def publish(self, batch: Batch, stored: Stored, announcement: Announcement) -> None:
        """Queue the publication of what a confirmed ``announcement``'s commit ``stored``.

        Only what the durable tier stored is published. A repeated put was stored before (a
        prune may have changed it since), so its thread's generation is bumped instead and the
        next read takes the stored version; a repeated regular write is not published at all
        (the stored one, its first value, may differ). Each thread's token leaves with its last
        call, so no reader trusts the thread before every call of the batch is in.
        """
        token, gens = announcement.token, announcement.gens
        repeated = {
            cp.thread_id
            for cp in batch.checkpoints
            if (cp.thread_id, cp.checkpoint_ns, cp.checkpoint_id) not in stored.checkpoints
        }
        calls: list[tuple[str, Callable[[str], ScriptCall]]] = []
        published: list[tuple[int, CheckpointRecord, CachedRecord, list[Any]]] = []
        for cp in batch.checkpoints:
            if cp.thread_id not in repeated:
                cached, blobs = self._published(cp)
                published.append((len(calls), cp, cached, blobs))
                calls.append((cp.thread_id, self._put_call(cp, cached, blobs, gens[cp.thread_id])))
        for op in batch.writes:
            if op.thread_id in repeated:
                continue
            head = (op.thread_id, op.checkpoint_ns, op.checkpoint_id)
            writes = [w for w in op.writes if (*head, w.task_id, w.idx) in stored.writes]
            if writes:
                gen = gens[op.thread_id]
                calls.append(
                    (op.thread_id, functools.partial(self._writes_call, gen, *head, writes))
                )
        settled = {tid for tid, _ in calls}
        for tid in announcement.threads:
            if tid in repeated:
                calls.append((tid, functools.partial(self._abandon_call, tid)))
            elif tid not in settled:
                calls.append((tid, functools.partial(self._settle_call, tid)))

        def compose() -> list[ScriptCall]:
            last = {tid: i for i, (tid, _) in enumerate(calls)}
            return [make(token if last[tid] == i else "") for i, (tid, make) in enumerate(calls)]

        def done(replies: list[Any]) -> None:
            for i, cp, cached, blobs in published:
                self._remember(
                    cp.thread_id, replies[i], cp.checkpoint_ns, cp.checkpoint_id, cached, blobs,
                    advance_head=True,
                )  # fmt: skip

        self.publications.add(Pending(announcement.threads, compose, done))

    def _put_call(
        self, cp: CheckpointRecord, cached: CachedRecord, blobs: list[Any], gen: str
    ) -> Callable[[str], ScriptCall]:
        def make(token: str) -> ScriptCall:
            tid, ns, cid = cp.thread_id, cp.checkpoint_ns, cp.checkpoint_id
            args = self._record_args(
                tid, ns, cid, cached, blobs, (), mode="publish", expected_gen=gen, token=token
            )
            return (PUT, self.link.tier_keys(tid), args)

        return make

    def _abandon_call(self, thread_id: str, token: str) -> ScriptCall:
        return (ABANDON, self.link.tier_keys(thread_id), [token])

    def _settle_call(self, thread_id: str, token: str) -> ScriptCall:
        return (SETTLE, self.link.tier_keys(thread_id), [token])

    async def fill(self, row: CheckpointRow, lookup: Lookup, *, head: bool) -> None:
        """Cache a row read from the durable tier after the miss ``lookup`` (refused by Redis
        if the thread was deleted or written since)."""
        if not lookup.fillable:
            return
        assert lookup.gen is not None
        versions = self._versions_of(row)
        record = CachedRecord(row.parent_id, row.body, row.metadata, versions)
        present = {ch for ch, _, _ in row.blobs}
        blobs: list[tuple[str, str, str, bytes | None]] = [
            (ch, versions[ch], typ, data) for ch, typ, data in row.blobs if ch in versions
        ]
        blobs += [(ch, v, EMPTY_BLOB_TYPE, None) for ch, v in versions.items() if ch not in present]
        tid, ns, cid = row.thread_id, row.checkpoint_ns, row.checkpoint_id
        mode = "fill-head" if head else "fill"
        gen, seq = lookup.gen, lookup.seq

        def compose() -> list[ScriptCall]:
            args = self._record_args(
                tid, ns, cid, record, blobs, row.writes, mode=mode, expected_gen=gen,
                expected_seq=seq,
            )  # fmt: skip
            return [(PUT, self.link.tier_keys(tid), args)]

        try:
            [reply] = await self.publications.send_with("fill", compose)
        except RedisUnavailable:
            return
        self._remember(tid, reply, ns, cid, record, blobs, advance_head=head)

    def _versions_of(self, row: CheckpointRow) -> dict[str, str]:
        versions = row.versions
        if versions is None:
            raise CorruptEntry("row without channel versions")
        return versions

    # ---------------------------------------------------------------- a lease holder's

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
        """Publish what a lease holder wrote: each namespace's newest checkpoint with all its
        values and writes, and the writes it added to checkpoints from before the lease, in one
        pipelined round trip, before the lease (and its token in the writes in flight) is
        released. Returns whether Redis holds it all (False: the thread was recorded dirty)."""
        published = []
        for ns, record in deferred.heads.items():
            cached, _ = self._published(record)
            blobs = self._all_values(deferred, record)
            if blobs is None:  # L1 evicted a value: the head cannot be published whole
                await self.mark_dirty([thread_id])
                return False
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
            calls: list[ScriptCall] = []
            for record, cached, blobs, writes in published:
                ns, cid = record.checkpoint_ns, record.checkpoint_id
                args = self._record_args(
                    thread_id, ns, cid, cached, blobs, writes, mode="publish-all",
                    expected_gen=deferred.gen,
                )  # fmt: skip
                calls.append((PUT, self.link.tier_keys(thread_id), args))
            for ns, cid in older:
                writes = deferred.final_writes(ns, cid)
                calls.append(self._writes_call(deferred.gen, thread_id, ns, cid, writes, ""))
            return calls

        try:
            replies = await self.publications.send_with("publish_deferred", compose)
        except RedisUnavailable:
            await self.mark_dirty([thread_id])
            return False
        for (record, cached, blobs, _), reply in zip(published, replies, strict=False):
            self._remember(
                thread_id, reply, record.checkpoint_ns, record.checkpoint_id, cached, blobs,
                advance_head=True,
            )  # fmt: skip
        return True


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
