"""What the Redis tier's parts share: the key layout, the L1 cache, and how entries are built.

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

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langgraph_resilient._local_cache import LocalCache
from langgraph_resilient._redis.breaker import TierBreaker
from langgraph_resilient._redis.wire import ScriptCall
from langgraph_resilient.checkpoint.cache.entries import (
    CachedRecord,
    CorruptEntry,
    pack,
    write_field,
    write_value,
)
from langgraph_resilient.checkpoint.cache.keys import GenerationKey, HeadKey, RecordKey, ValueKey
from langgraph_resilient.checkpoint.cache.publication import Publications
from langgraph_resilient.checkpoint.cache.redis_link import RedisLink
from langgraph_resilient.checkpoint.cache.scripts import PUT, WRITES
from langgraph_resilient.checkpoint.records import (
    EMPTY_BLOB_TYPE,
    CheckpointRecord,
    CheckpointRow,
    WriteRecord,
    is_special,
)


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


class TierBase:
    """The link, the L1 cache and the publication queue, and the helpers every part of the
    Redis tier uses to build script arguments and L1 entries."""

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

    def _gen_seen(self, thread_id: str) -> str:
        """The thread's generation as this replica last saw it ('' when it never did)."""
        seen: str | None = self.cache.get(GenerationKey(thread_id))
        return seen or ""

    def _remember_record(
        self, thread_id: str, gen: str, ns: str, cid: str, record: CachedRecord
    ) -> None:
        size = len(record.body[1]) + len(record.metadata[1]) + 64 * len(record.versions)
        self.cache.put(RecordKey(thread_id, gen, ns, cid), record, size)

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

    def _versions_of(self, row: CheckpointRow) -> dict[str, str]:
        versions = row.versions
        if versions is None:
            raise CorruptEntry("row without channel versions")
        return versions

    def _row(
        self,
        thread_id: str,
        gen: str,
        ns: str,
        cid: str,
        record: CachedRecord,
        writes: list[WriteRecord],
    ) -> CheckpointRow | None:
        """A row from a record and the values L1 holds for it (``None``: one is missing)."""
        blobs = []
        for channel, version in record.versions.items():
            value = self.cache.get(ValueKey(thread_id, gen, ns, channel, str(version)))
            if value is None:
                return None
            if value[0] != EMPTY_BLOB_TYPE:
                blobs.append((channel, value[0], value[1]))
        return CheckpointRow(
            thread_id=thread_id,
            checkpoint_ns=ns,
            checkpoint_id=cid,
            parent_id=record.parent_id,
            body=record.body,
            metadata=record.metadata,
            blobs=blobs,
            writes=writes,
        )

    def _fill_call(
        self,
        row: CheckpointRow,
        record: CachedRecord,
        blobs: Sequence[tuple[str, str, str, bytes | None]],
        *,
        mode: str,
        gen: str,
        seq: str,
    ) -> ScriptCall:
        """The PUT_LUA call caching a row read from the durable tier (``mode``: ``fill`` or
        ``fill-head``), refused unless ``gen`` and ``seq`` are still the thread's."""
        args = self._record_args(
            row.thread_id, row.checkpoint_ns, row.checkpoint_id, record, blobs, row.writes,
            mode=mode, expected_gen=gen, expected_seq=seq,
        )  # fmt: skip
        return (PUT, self.link.tier_keys(row.thread_id), args)

    def _fill_parts(
        self, row: CheckpointRow
    ) -> tuple[CachedRecord, list[tuple[str, str, str, bytes | None]]]:
        """A durable row as the record and values a fill caches (empty channels included)."""
        versions = self._versions_of(row)
        record = CachedRecord(row.parent_id, row.body, row.metadata, versions)
        present = {ch for ch, _, _ in row.blobs}
        blobs: list[tuple[str, str, str, bytes | None]] = [
            (ch, versions[ch], typ, data) for ch, typ, data in row.blobs if ch in versions
        ]
        blobs += [(ch, v, EMPTY_BLOB_TYPE, None) for ch, v in versions.items() if ch not in present]
        return record, blobs
