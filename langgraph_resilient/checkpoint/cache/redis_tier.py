"""L2: Redis as a shared cache in front of the durable tier, and the L1 cache it validates.

The tier is :class:`RedisTier`: reads, fills and the publication of plain writes here; the
history listings in :mod:`.history_reads`; a lease holder's side in :mod:`.holder`; what they
share (and the key layout below) in :mod:`.tier_base`.

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
import logging
from collections.abc import Callable, Sequence
from typing import Any

from langgraph_resilient._local_cache import LocalCache
from langgraph_resilient._redis.client import RedisSettings, connect, why_not_connected
from langgraph_resilient._redis.wire import ScriptCall
from langgraph_resilient._urls import redact
from langgraph_resilient.checkpoint.cache.deferred import DeferredPublication
from langgraph_resilient.checkpoint.cache.entries import (
    CachedRecord,
    CorruptEntry,
    decode_record,
    decode_writes,
    unpack,
)
from langgraph_resilient.checkpoint.cache.history_reads import HistoryReads
from langgraph_resilient.checkpoint.cache.holder import HolderPublication
from langgraph_resilient.checkpoint.cache.keys import GenerationKey, HeadKey, RecordKey, ValueKey
from langgraph_resilient.checkpoint.cache.publication import Announcement, Pending
from langgraph_resilient.checkpoint.cache.redis_link import RedisLink, RedisUnavailable
from langgraph_resilient.checkpoint.cache.scripts import ABANDON, PUT, READ, SETTLE
from langgraph_resilient.checkpoint.cache.tier_base import Lookup
from langgraph_resilient.checkpoint.durable.store import DurableStore
from langgraph_resilient.checkpoint.records import (
    Batch,
    CheckpointRecord,
    CheckpointRow,
    Stored,
)
from langgraph_resilient.errors import TierUnavailableError
from langgraph_resilient.observability import metrics

log = logging.getLogger("langgraph_resilient.redis")


class RedisTier(HistoryReads, HolderPublication):
    """L2 (Redis) and the L1 cache it validates: reads, publications and fills of checkpoints.
    Never raises for a Redis failure: a failed read is a miss, a failed publication marks the
    thread dirty."""

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
            record = decode_record(reply[4], reply[5])
            versions = record.versions
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
        row = self._row(thread_id, gen, ns, cid, record, writes)
        if row is None:
            return Lookup(None, gen, seq)
        self.cache.put(HeadKey(thread_id, ns), cid, 64)
        return Lookup(row, gen, seq)

    # ---------------------------------------------------------------- writes

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
        record, blobs = self._fill_parts(row)
        tid, ns, cid = row.thread_id, row.checkpoint_ns, row.checkpoint_id
        mode = "fill-head" if head else "fill"
        gen, seq = lookup.gen, lookup.seq

        def compose() -> list[ScriptCall]:
            return [self._fill_call(row, record, blobs, mode=mode, gen=gen, seq=seq)]

        try:
            [reply] = await self.publications.send_with("fill", compose)
        except RedisUnavailable:
            return
        self._remember(tid, reply, ns, cid, record, blobs, advance_head=head)


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
