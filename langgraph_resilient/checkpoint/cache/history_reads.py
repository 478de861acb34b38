"""History listings from Redis: ``list(config, before=..., limit=...)`` of one thread and
namespace, newest first, in one round trip (HISTORY_LUA), and the fill that caches a page the
durable tier listed (INDEX_LUA with one PUT_LUA fill per checkpoint)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from langgraph_resilient._redis.wire import ScriptCall
from langgraph_resilient.checkpoint.cache.entries import (
    CachedRecord,
    CorruptEntry,
    decode_record,
    decode_writes,
    unpack,
)
from langgraph_resilient.checkpoint.cache.keys import GenerationKey, HistoryKey, RecordKey, ValueKey
from langgraph_resilient.checkpoint.cache.redis_link import RedisUnavailable
from langgraph_resilient.checkpoint.cache.scripts import HISTORY, INDEX
from langgraph_resilient.checkpoint.cache.tier_base import TierBase
from langgraph_resilient.checkpoint.records import CheckpointRow

log = logging.getLogger("langgraph_resilient.redis")


@dataclass(slots=True)
class HistoryLookup:
    """A history page from Redis (``rows``), or a miss (``rows`` is None) to fill from the
    durable tier with ``gen`` and ``seq`` (as :class:`~.tier_base.Lookup`)."""

    rows: list[CheckpointRow] | None
    gen: str | None
    seq: str = ""

    @property
    def fillable(self) -> bool:
        """Whether a page read from the durable tier after this miss may be cached."""
        return self.gen is not None and self.seq != ""


class HistoryReads(TierBase):
    """The Redis tier's history listings."""

    async def history(
        self, thread_id: str, ns: str, before: str | None, limit: int, *, own_token: str = ""
    ) -> HistoryLookup:
        """Up to ``limit`` checkpoints of the namespace before ``before`` (``None``: from the
        head), newest first, or a miss. Never raises for a Redis failure."""

        def compose() -> list[ScriptCall]:
            known_gen = self._gen_seen(thread_id)
            last: tuple[str, ...] = self.cache.get(HistoryKey(thread_id, ns)) or ()
            known = [c for c in last if self.cache.get(RecordKey(thread_id, known_gen, ns, c))]
            args = [self.link.base(thread_id), ns, before or "", limit, own_token, known_gen]
            return [(HISTORY, self.link.tier_keys(thread_id), args + known)]

        try:
            [reply] = await self.publications.send_with("history", compose)
        except RedisUnavailable:
            return HistoryLookup(None, None)
        try:
            return self._assemble_history(thread_id, ns, reply)
        except CorruptEntry as exc:
            log.warning("dropping corrupt cache entries of thread %r: %s", thread_id, exc)
            await self.invalidate([thread_id])
            return HistoryLookup(None, None)

    def _assemble_history(self, thread_id: str, ns: str, reply: list[Any]) -> HistoryLookup:
        gen, seq = reply[0].decode(), reply[1].decode()
        self.cache.put(GenerationKey(thread_id), gen, 16)
        if len(reply) < 3:
            return HistoryLookup(None, gen, seq)
        entries, channels, versions, values = reply[2:6]
        for channel, version, value in zip(channels, versions, values, strict=True):
            if value is not None:
                typ, data = unpack(value)
                key = ValueKey(thread_id, gen, ns, channel.decode(), version.decode())
                self.cache.put(key, (typ, data), len(data))
        rows = []
        for raw_id, flat_writes, raw_record, raw_versions in entries:
            cid = raw_id.decode()
            complete, writes = decode_writes(flat_writes)
            if not complete:
                return HistoryLookup(None, gen, seq)
            record: CachedRecord | None
            if raw_record is not None:
                record = decode_record(raw_record, raw_versions)
                self._remember_record(thread_id, gen, ns, cid, record)
            else:
                record = self.cache.get(RecordKey(thread_id, gen, ns, cid))
            row = None if record is None else self._row(thread_id, gen, ns, cid, record, writes)
            if row is None:
                return HistoryLookup(None, gen, seq)
            rows.append(row)
        ids = tuple(row.checkpoint_id for row in rows)
        self.cache.put(HistoryKey(thread_id, ns), ids, 40 * len(ids))
        return HistoryLookup(rows, gen, seq)

    async def fill_history(
        self,
        thread_id: str,
        ns: str,
        rows: list[CheckpointRow],
        lookup: HistoryLookup,
        before: str | None,
        limit: int,
    ) -> None:
        """Cache a page the durable tier listed after the miss ``lookup``: every checkpoint,
        and the index range it covers (down to the first checkpoint when the page is short)."""
        if not lookup.fillable:
            return
        assert lookup.gen is not None
        gen, seq = lookup.gen, lookup.seq
        filled = [(row, *self._fill_parts(row)) for row in rows]
        lo = rows[-1].checkpoint_id if len(rows) >= limit else ""
        ttl = self.link.settings.key_ttl_s

        def compose() -> list[ScriptCall]:
            keys = self.link.tier_keys(thread_id)
            calls = [
                self._fill_call(row, record, blobs, mode="fill", gen=gen, seq=seq)
                for row, record, blobs in filled
            ]
            index = [self.link.base(thread_id), ns, "fill", gen, seq, lo, before or "", ttl]
            calls.append((INDEX, keys, index + [row.checkpoint_id for row in rows]))
            return calls

        try:
            replies = await self.publications.send_with("fill_history", compose)
        except RedisUnavailable:
            return
        for (row, record, blobs), reply in zip(filled, replies, strict=False):
            self._remember(
                thread_id, reply, ns, row.checkpoint_id, record, blobs, advance_head=False
            )
