"""L2: Redis as a shared cache and coherence point in front of the durable tier.

What lives in Redis, per thread, under ``{prefix}{thread_id}:<server>:`` (the ``{thread_id}``
hash tag puts a thread's keys in one Cluster slot; ``<server>`` is the ``run_id`` of the server
the tier connected to, so a restarted or failed-over server, which may have lost writes the old
one acknowledged, is an empty cache rather than a stale one):

- ``g``: the thread's cache generation. Every other key embeds it; deleting, pruning or
  repairing a thread bumps it, which makes every older entry unreachable on every replica (they
  expire by TTL) and invalidates the L1 entries keyed by the old generation.
- ``<gen>:h``: hash ``namespace -> newest checkpoint id`` (the head), only ever raised.
- ``<gen>:c:<ns>:<id>``: a checkpoint record (immutable) and its channel versions.
- ``<gen>:b:<ns>:<channel>:<version>``: a channel value (immutable).
- ``<gen>:w:<ns>:<id>``: hash of a checkpoint's pending writes. The field ``_`` marks the hash
  complete: it is set when the checkpoint is put (writes that arrived first are already in it)
  or when the hash is refilled from the durable tier; a hash without it is never trusted.

Every operation is one round trip (a Lua script). Redis is optional at run time: failures and
timeouts feed a breaker; while it is open the saver reads and writes the durable tier alone and
records each thread it writes as *dirty* in the durable tier. A replica whose breaker closes
again, and every replica every ``repair_interval_s``, bumps the generation of dirty threads
before trusting Redis, so no replica serves a head that a write during the outage superseded.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import ormsgpack
from redis.exceptions import RedisClusterException, RedisError

from langgraph_resilient._aio import cancelling, stop_tasks
from langgraph_resilient.checkpoint.batcher import Batch, Stored
from langgraph_resilient.checkpoint.cache import LocalCache
from langgraph_resilient.checkpoint.records import (
    EMPTY_BLOB_TYPE,
    CheckpointRecord,
    CheckpointRow,
    WriteRecord,
)
from langgraph_resilient.checkpoint.redis_conn import RedisSettings
from langgraph_resilient.checkpoint.redis_wire import (
    LuaScript,
    ScriptCall,
    ServerChanged,
    script_runner,
)
from langgraph_resilient.checkpoint.store import DurableStore
from langgraph_resilient.errors import describe_error
from langgraph_resilient.observability import metrics

log = logging.getLogger("langgraph_resilient.redis")
T = TypeVar("T")

_MAGIC = b"LGR1"
"""Leads every value this tier writes: anything else under our keys is foreign or corrupt."""

# Read a checkpoint (the head when ARGV[3] is empty) with its pending writes. The record and its
# values are sent only when the caller does not hold them already (ARGV[4]/[5]: the checkpoint id
# and generation it holds). Returns {gen} | {gen, id, writes} | {gen, id, writes, record,
# versions_json, channels, values}.
READ_LUA = """
local gen = redis.call('GET', KEYS[1]) or '0'
local base = ARGV[1] .. gen .. ':'
local ns = ARGV[2]
local cid = ARGV[3]
if cid == '' then
  cid = redis.call('HGET', base .. 'h', ns)
  if not cid then return {gen} end
end
local writes = redis.call('HGETALL', base .. 'w:' .. ns .. ':' .. cid)
if cid == ARGV[4] and gen == ARGV[5] then return {gen, cid, writes} end
local rec = redis.call('HMGET', base .. 'c:' .. ns .. ':' .. cid, 'r', 'v')
if not rec[1] or not rec[2] then return {gen, cid, writes} end
local ok, versions = pcall(cjson.decode, rec[2])
if not ok or type(versions) ~= 'table' then return {gen, cid, writes} end
local channels, keys = {}, {}
for ch, ver in pairs(versions) do
  channels[#channels + 1] = ch
  keys[#keys + 1] = base .. 'b:' .. ns .. ':' .. ch .. ':' .. tostring(ver)
end
local values = {}
if #keys > 0 then values = redis.call('MGET', unpack(keys)) end
return {gen, cid, writes, rec[1], rec[2], channels, values}
"""

# Cache a checkpoint after the durable tier stored it (or after a read from it): the record, its
# values, the completeness mark of its writes (plus, for a refill, the writes themselves, never
# replacing newer ones), and the head if this checkpoint is newer. ARGV[7] is the mode: 'fill'
# (an explicit-id read), 'fill-head' (a head read), 'publish' (a write). ARGV[8] is the
# generation the caller saw ('' = any). On a mismatch a thread was deleted or repaired since:
# a fill just gives up; a publish also bumps the generation, because the entry it would have
# replaced may now be older than what it just wrote. Fills are also refused while the thread's
# lease is held: its holder may be writing without publishing (see DeferredPublication).
# Returns the generation, or nil.
PUT_LUA = """
local gen = redis.call('GET', KEYS[1]) or '0'
if ARGV[8] ~= '' and ARGV[8] ~= gen then
  if ARGV[7] == 'publish' then redis.call('INCR', KEYS[1]) end
  return false
end
if ARGV[7] ~= 'publish' and redis.call('EXISTS', KEYS[2]) == 1 then
  return false
end
local base = ARGV[1] .. gen .. ':'
local ns, cid, ttl = ARGV[2], ARGV[3], tonumber(ARGV[6])
local ckey = base .. 'c:' .. ns .. ':' .. cid
redis.call('HSET', ckey, 'r', ARGV[4], 'v', ARGV[5])
redis.call('EXPIRE', ckey, ttl)
local nblobs = tonumber(ARGV[9])
local i = 10
for _ = 1, nblobs do
  redis.call('SET', base .. 'b:' .. ns .. ':' .. ARGV[i] .. ':' .. ARGV[i + 1], ARGV[i + 2],
    'EX', ttl)
  i = i + 3
end
local wkey = base .. 'w:' .. ns .. ':' .. cid
while i <= #ARGV do
  redis.call('HSETNX', wkey, ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('HSET', wkey, '_', '1')
redis.call('EXPIRE', wkey, ttl)
if ARGV[7] ~= 'fill' then
  local hkey = base .. 'h'
  local cur = redis.call('HGET', hkey, ns)
  if (not cur) or cur < cid then redis.call('HSET', hkey, ns, cid) end
  redis.call('EXPIRE', hkey, ttl)
end
return gen
"""

# Add a task's writes to a checkpoint's cached writes: regular writes keep the first value,
# special ones (flag '1') the latest, as in the durable tier.
WRITES_LUA = """
local gen = redis.call('GET', KEYS[1]) or '0'
local wkey = ARGV[1] .. gen .. ':w:' .. ARGV[2] .. ':' .. ARGV[3]
for i = 5, #ARGV, 3 do
  if ARGV[i + 2] == '1' then
    redis.call('HSET', wkey, ARGV[i], ARGV[i + 1])
  else
    redis.call('HSETNX', wkey, ARGV[i], ARGV[i + 1])
  end
end
redis.call('EXPIRE', wkey, tonumber(ARGV[4]))
return gen
"""


@dataclass(slots=True)
class DeferredPublication:
    """What a lease holder wrote to a thread without publishing it to Redis yet.

    The holder is the thread's only writer, so instead of publishing every write (one Redis
    round trip each) it withdraws the thread's cached entries once, at its first write (a
    generation bump: nothing cached before can be served, and fills are refused while the
    lease key exists), and publishes the newest checkpoint of each namespace with its values
    and pending writes once, when it releases the lease. If it dies first, the entries stay
    withdrawn and readers go to the durable tier.
    """

    in_redis: Callable[[], bool]
    """Whether the lease still lives in Redis (the lease module's answer)."""
    gen: str | None = None
    """The generation after the withdrawal (``None``: not withdrawn yet)."""
    previous_gen: str = ""
    """The generation before it: L1 holds the values read then under it."""
    server: str | None = None
    """The Redis server the withdrawal was made on: a release on another one (a restart or a
    failover in between) only invalidates the thread there."""
    failed: bool = False
    """Redis failed for the holder: writes go the per-write way (marked dirty) from now on."""
    heads: dict[str, CheckpointRecord] = field(default_factory=dict)
    writes: dict[tuple[str, str], list[WriteRecord]] = field(default_factory=dict)
    withdrawing: asyncio.Lock = field(default_factory=asyncio.Lock)

    def add_checkpoint(self, record: CheckpointRecord) -> None:
        head = self.heads.get(record.checkpoint_ns)
        if head is None or record.checkpoint_id > head.checkpoint_id:
            self.heads[record.checkpoint_ns] = record

    def add_writes(self, ns: str, cid: str, writes: Sequence[WriteRecord]) -> None:
        self.writes.setdefault((ns, cid), []).extend(writes)

    def final_writes(self, ns: str, cid: str) -> list[WriteRecord]:
        """The checkpoint's writes as the durable tier holds them: a regular write keeps its
        first value, a special one (idx < 0) its last."""
        final: dict[tuple[str, int], WriteRecord] = {}
        for w in self.writes.get((ns, cid), []):
            key = (w.task_id, w.idx)
            if w.idx < 0 or key not in final:
                final[key] = w
        return list(final.values())


# A lease holder withdraws the thread's cached entries: bump the generation. The lease module
# treats a generation that moved since its epoch band was confirmed (`okg` in the thread's epoch
# hash, KEYS[2]) as a sign of a repair after an outage and re-checks the durable store; this
# bump is the holder's own, so it carries the confirmation along unless it was stale already.
WITHDRAW_LUA = """
local old = redis.call('GET', KEYS[1]) or '0'
local new = redis.call('INCR', KEYS[1])
if redis.call('HGET', KEYS[2], 'okg') == old then
  redis.call('HSET', KEYS[2], 'okg', tostring(new))
end
return new
"""

BUMP = LuaScript("return redis.call('INCR', KEYS[1])")
READ = LuaScript(READ_LUA)
PUT = LuaScript(PUT_LUA)
WRITES = LuaScript(WRITES_LUA)
WITHDRAW = LuaScript(WITHDRAW_LUA)


class RedisUnavailable(Exception):
    """Redis failed, timed out, or its breaker is open: use the durable tier."""


class CorruptEntry(Exception):
    """A value under our keys does not decode: foreign or damaged."""


@dataclass(slots=True)
class TierBreaker:
    """Consecutive-failure breaker of the Redis tier.

    ``failure_threshold`` failures in a row open it for ``open_for_s``; then one caller probes
    (running the repair first) and closes it or opens it again.
    """

    failure_threshold: int = 2
    open_for_s: float = 2.0
    failures: int = 0
    opened_at: float | None = None
    clock: Callable[[], float] = time.monotonic

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def probe_due(self) -> bool:
        return self.opened_at is not None and self.clock() - self.opened_at >= self.open_for_s

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def trip(self) -> None:
        """Open now (Redis was unreachable when the saver started)."""
        self.failures = self.failure_threshold
        self.opened_at = self.clock()

    def failure(self) -> bool:
        """Count a failure; True when this one opened the breaker."""
        self.failures += 1
        if self.failures >= self.failure_threshold:
            was_open = self.opened_at is not None
            self.opened_at = self.clock()
            return not was_open
        return False


@dataclass(slots=True)
class CachedRecord:
    """An immutable checkpoint record as L1 keeps it."""

    parent_id: str | None
    body: tuple[str, bytes]
    metadata: tuple[str, bytes]
    versions: dict[str, str]


@dataclass(slots=True)
class Lookup:
    """Result of a Redis read: a full row, or a miss to fill from the durable tier.

    ``gen`` is the thread's generation when Redis answered (``None`` when it did not): a fill
    must carry it so that a concurrent delete is not undone.
    """

    row: CheckpointRow | None
    gen: str | None


def _pack(value: Any) -> bytes:
    return _MAGIC + ormsgpack.packb(value)


def _unpack(data: Any) -> Any:
    if not isinstance(data, bytes) or not data.startswith(_MAGIC):
        raise CorruptEntry("missing magic")
    try:
        return ormsgpack.unpackb(data[len(_MAGIC) :])
    except Exception as exc:
        raise CorruptEntry(str(exc)) from exc


def _write_field(w: WriteRecord) -> bytes:
    return f"{w.task_id}\x1f{w.idx}".encode()


def _write_value(w: WriteRecord) -> bytes:
    return _pack([w.task_id, w.idx, w.channel, w.type, w.data, w.task_path])


def _decode_writes(flat: Sequence[Any]) -> tuple[bool, list[WriteRecord]]:
    complete = False
    writes = []
    for name, value in zip(flat[::2], flat[1::2], strict=True):
        if name == b"_":
            complete = True
            continue
        task_id, idx, channel, typ, data, path = _unpack(value)
        writes.append(WriteRecord(task_id, int(idx), channel, typ, data, path))
    return complete, writes


_SERVER_SEGMENT = re.compile(rb"\}:([0-9a-f]{40}):")


def _left_by_another_server(key: bytes, server_id: str) -> bool:
    """A cache key (``{prefix}{thread}:<run_id>:...``) written for another server."""
    found = _SERVER_SEGMENT.search(key)
    return found is not None and found.group(1).decode() != server_id


class RedisTier:
    """The Redis tier plus the L1 cache it validates. Never raises for a Redis failure."""

    def __init__(
        self,
        client: Any,
        settings: RedisSettings,
        *,
        prefix: str,
        cache: LocalCache,
        store: DurableStore,
        breaker: TierBreaker | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.prefix = prefix
        self.cache = cache
        self.store = store
        self.breaker = breaker or TierBreaker()
        self.repair_interval_s = settings.repair_interval_s
        self._scripts = script_runner(client, settings.socket_timeout_s * 2)
        self._incarnation: str | None = None
        """The Redis server (its ``run_id``) whose cache entries this tier uses: part of every
        cache key, so a restarted or failed-over server, which may have lost writes the old
        one acknowledged, is a fresh, empty cache."""
        self._recovering = asyncio.Lock()
        self._repair_task: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- keys

    def _thread_base(self, thread_id: str) -> str:
        """Keys that outlive a server change: the thread's lease and epoch (lease.py)."""
        return f"{self.prefix}{{{thread_id}}}:"

    def _base(self, thread_id: str) -> str:
        """Cache keys, scoped to the server they were written to."""
        return f"{self.prefix}{{{thread_id}}}:{self._incarnation or '-'}:"

    def _gen_key(self, thread_id: str) -> str:
        return self._base(thread_id) + "g"

    def generation_key(self, thread_id: str) -> str:
        """The thread's cache generation key (the lease reads it to notice cache repairs)."""
        return self._gen_key(thread_id)

    def _put_keys(self, thread_id: str) -> list[str]:
        return [self._gen_key(thread_id), self._thread_base(thread_id) + "lease"]

    def _adopt(self, server_id: str) -> None:
        """Use the cache of another Redis server from now on (a restart or a failover)."""
        if self._incarnation is not None:
            log.warning(
                "Redis server changed (%s, was %s): a restart or a failover may have lost "
                "cache writes, so the tier starts from an empty cache",
                server_id,
                self._incarnation,
            )
        changed = self._incarnation is not None
        self._incarnation = server_id
        self.cache.clear()
        if changed and (self._sweep_task is None or self._sweep_task.done()):
            self._sweep_task = asyncio.get_running_loop().create_task(self._sweep(server_id))

    async def _sweep(self, server_id: str) -> None:
        """Delete what earlier servers' entries left on this one: a promoted replica holds a
        copy of them, unreachable now, that would take memory until the entries' TTL."""
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in self.prefix) + "*"
        cursor: Any = "0"
        swept = 0
        try:
            while self._incarnation == server_id and not cancelling():
                scan = ("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
                [[cursor, keys]] = await self._scripts.commands([scan], server_id)
                stale = [k for k in keys if _left_by_another_server(k, server_id)]
                if stale:
                    await self._scripts.commands([("UNLINK", *stale)], server_id)
                    swept += len(stale)
                if cursor in (b"0", 0, "0"):
                    break
                await asyncio.sleep(0.005)  # a background chore: leave Redis to the graphs
        except (RedisError, OSError, TimeoutError) as exc:
            log.debug("sweeping entries of earlier Redis servers stopped: %s", describe_error(exc))
        if swept:
            log.info("deleted %d cache entries that earlier Redis servers left", swept)

    def _bumps(self, thread_ids: Sequence[str]) -> list[tuple[str, str]]:
        """Generation bumps: every cached entry of these threads becomes unreachable."""
        return [("INCR", self._gen_key(thread_id)) for thread_id in thread_ids]

    async def connect(self) -> None:
        """Connect and learn which server this is (raises when Redis is unreachable)."""
        self._adopt(await self._scripts.identify())

    async def _run(self, compose: Callable[[], Sequence[ScriptCall]]) -> list[Any]:
        """Script calls composed for the server the runner is connected to (recomposed once
        when it turns out to be another one)."""
        try:
            return await self._scripts.run(compose(), self._incarnation)
        except ServerChanged as exc:
            self._adopt(exc.server_id)
        return await self._scripts.run(compose(), self._incarnation)

    async def _commands(self, compose: Callable[[], Sequence[Sequence[Any]]]) -> list[Any]:
        try:
            return await self._scripts.commands(compose(), self._incarnation)
        except ServerChanged as exc:
            self._adopt(exc.server_id)
        return await self._scripts.commands(compose(), self._incarnation)

    # ---------------------------------------------------------------- breaker

    async def _call(self, name: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis round trip under the breaker (``op`` enforces its own time limit)."""
        if self.breaker.is_open:
            if not self.breaker.probe_due() or self._recovering.locked():
                raise RedisUnavailable("breaker open")
            await self._recover()
        try:
            with metrics.timed_op(name, "redis"):
                result = await op()
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            metrics.CHECKPOINT_REDIS_FAILURES.inc()
            if self.breaker.failure():
                metrics.CHECKPOINT_REDIS_AVAILABLE.set(0)
                why = describe_error(exc)
                log.warning("Redis tier unavailable, using the durable tier alone: %s", why)
            raise RedisUnavailable(describe_error(exc)) from exc
        self.breaker.success()
        return result

    async def _recover(self) -> None:
        """Half-open probe: repair dirty threads first; close the breaker only if that works."""
        async with self._recovering:
            if not self.breaker.is_open:
                return
            try:
                async with asyncio.timeout(self.settings.socket_timeout_s * 8):
                    await self._repair_dirty()
            except Exception as exc:
                self.breaker.failure()
                raise RedisUnavailable(f"recovery failed: {describe_error(exc)}") from exc
            self.breaker.success()
            metrics.CHECKPOINT_REDIS_AVAILABLE.set(1)
            log.warning("Redis tier is back; dirty threads repaired")

    async def _repair_dirty(self) -> int:
        """Bump the generation of every thread written while Redis was unreachable."""
        repaired = 0
        while True:
            dirty = await self.store.dirty_threads(500)
            if not dirty:
                return repaired
            await self._commands(functools.partial(self._bumps, [tid for tid, _ in dirty]))
            await self.store.clear_dirty(dirty)
            repaired += len(dirty)
            if len(dirty) < 500:
                return repaired

    async def mark_dirty(self, thread_ids: Sequence[str]) -> None:
        """Record threads written without Redis (their cached entries may be stale)."""
        metrics.CHECKPOINT_DIRTY_THREADS.inc(len(thread_ids))
        try:
            await self.store.mark_dirty(list(thread_ids))
        except Exception:
            log.exception("could not record dirty threads %s", list(thread_ids))

    def start(self) -> None:
        """Start the periodic repair (covers replicas that lost Redis while this one did not)."""
        self._repair_task = asyncio.get_running_loop().create_task(self._repair_loop())

    async def stop(self) -> None:
        """Stop the periodic repair (and a sweep in progress) and close the client; bounded in
        time whatever Redis does (a task that will not stop is logged and abandoned)."""
        tasks = [self._repair_task, self._sweep_task]
        self._repair_task = self._sweep_task = None
        try:
            await stop_tasks(tasks, what="closing the Redis tier", log=log)
        finally:
            await self._scripts.close()
            try:
                async with asyncio.timeout(self.settings.connect_timeout_s * 2):
                    await self.client.aclose()
            except Exception:
                log.debug("closing the Redis client failed", exc_info=True)

    async def _repair_loop(self) -> None:
        while not cancelling():
            await asyncio.sleep(self.repair_interval_s)
            if self.breaker.is_open:
                continue
            try:
                async with asyncio.timeout(max(self.repair_interval_s, 1.0)):
                    await self._repair_dirty()
            except Exception:
                log.debug("periodic cache repair failed", exc_info=True)

    # ---------------------------------------------------------------- reads

    async def read(self, thread_id: str, ns: str, checkpoint_id: str | None) -> Lookup:
        """A checkpoint from L1 + Redis in one round trip, or a miss (``row`` is None)."""

        def compose() -> list[ScriptCall]:
            known_gen = self._gen_seen(thread_id)
            if checkpoint_id is None:
                known_id = self.cache.get(("h", thread_id, ns)) or ""
            else:
                known_id = checkpoint_id
            if known_id and self.cache.get(("c", thread_id, known_gen, ns, known_id)) is None:
                known_id = ""
            args = [self._base(thread_id), ns, checkpoint_id or "", known_id, known_gen]
            return [(READ, [self._gen_key(thread_id)], args)]

        try:
            [reply] = await self._batch("read", compose)
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
        self.cache.put(("g", thread_id), gen, 16)
        if len(reply) < 3:
            return Lookup(None, gen)
        cid = reply[1].decode()
        complete, writes = _decode_writes(reply[2])
        if not complete:
            return Lookup(None, gen)
        if len(reply) > 3:
            parent, body_type, body, meta_type, meta = _unpack(reply[3])
            try:
                versions = json.loads(reply[4])
            except ValueError as exc:
                raise CorruptEntry("channel versions") from exc
            record = CachedRecord(parent, (body_type, body), (meta_type, meta), versions)
            self._remember_record(thread_id, gen, ns, cid, record)
            for channel, value in zip(reply[5], reply[6], strict=True):
                if value is not None:
                    ch = channel.decode()
                    typ, data = _unpack(value)
                    self.cache.put(
                        ("b", thread_id, gen, ns, ch, versions[ch]), (typ, data), len(data)
                    )
        else:
            held: CachedRecord | None = self.cache.get(("c", thread_id, gen, ns, cid))
            if held is None:
                return Lookup(None, gen)
            record = held
        blobs = []
        for channel, version in record.versions.items():
            value = self.cache.get(("b", thread_id, gen, ns, channel, str(version)))
            if value is None:
                return Lookup(None, gen)
            if value[0] != EMPTY_BLOB_TYPE:
                blobs.append((channel, value[0], value[1]))
        self.cache.put(("h", thread_id, ns), cid, 64)
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
        seen: str | None = self.cache.get(("g", thread_id))
        return seen or ""

    def _remember_record(
        self, thread_id: str, gen: str, ns: str, cid: str, record: CachedRecord
    ) -> None:
        size = len(record.body[1]) + len(record.metadata[1]) + 64 * len(record.versions)
        self.cache.put(("c", thread_id, gen, ns, cid), record, size)

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
            self._base(thread_id),
            ns,
            cid,
            _pack([record.parent_id, *record.body, *record.metadata]),
            json.dumps(record.versions),
            self.settings.key_ttl_s,
            mode,
            expected_gen,
            len(blobs),
        ]
        for channel, version, typ, data in blobs:
            args += [channel, version, _pack([typ, data or b""])]
        for w in writes:
            args += [_write_field(w), _write_value(w)]
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
            self.cache.put(("g", thread_id), "", 16)
            return
        gen = reply.decode()
        self.cache.put(("g", thread_id), gen, 16)
        self._remember_record(thread_id, gen, ns, cid, record)
        for channel, version, typ, data in blobs:
            value = data or b""
            self.cache.put(("b", thread_id, gen, ns, channel, version), (typ, value), len(value))
        if advance_head:
            self.cache.put(("h", thread_id, ns), cid, 64)

    @staticmethod
    def _published(record: CheckpointRecord) -> tuple[CachedRecord, list[Any]]:
        cached = CachedRecord(
            record.parent_id, record.body, record.metadata, record.channel_versions
        )
        return cached, [(b.channel, b.version, b.type, b.data) for b in record.blobs]

    def _writes_args(
        self, thread_id: str, ns: str, cid: str, writes: Sequence[WriteRecord]
    ) -> list[Any]:
        args: list[Any] = [self._base(thread_id), ns, cid, self.settings.key_ttl_s]
        for w in writes:
            args += [_write_field(w), _write_value(w), "1" if w.idx < 0 else "0"]
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
            [reply] = await self._batch("publish", compose)
        except RedisUnavailable:
            await self.mark_dirty([tid])
            return
        self._remember(tid, reply, ns, cid, cached, blobs, advance_head=True)

    async def after_put_writes(
        self, thread_id: str, ns: str, cid: str, writes: Sequence[WriteRecord]
    ) -> None:
        """Publish writes the durable tier acknowledged."""
        try:
            await self._batch(
                "publish_writes",
                lambda: [
                    (
                        WRITES,
                        [self._gen_key(thread_id)],
                        self._writes_args(thread_id, ns, cid, writes),
                    )
                ],
            )
        except RedisUnavailable:
            await self.mark_dirty([thread_id])

    async def run_script(
        self, name: str, script: LuaScript, keys: Callable[[], list[str]], args: Sequence[Any]
    ) -> Any:
        """One Lua call on the tier's connection, under its breaker (the lease's calls);
        ``keys`` are named when the server is known. Raises :class:`RedisUnavailable`."""
        [reply] = await self._batch(name, lambda: [(script, keys(), args)])
        return reply

    async def _batch(self, name: str, compose: Callable[[], Sequence[ScriptCall]]) -> list[Any]:
        """Script calls in one round trip, under the breaker. ``compose`` builds them when the
        server is known: every key names the server it is meant for."""
        return await self._call(name, lambda: self._run(compose))

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
                calls.append((WRITES, [self._gen_key(head[0])], self._writes_args(*head, writes)))
            return calls

        try:
            replies = await self._batch("publish_batch", compose)
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
            [reply] = await self._batch("fill", compose)
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
            keys = [self._gen_key(thread_id), self._thread_base(thread_id) + "epoch"]
            return [(WITHDRAW, keys, [])]

        try:
            [gen] = await self._batch("withdraw", compose)
        except RedisUnavailable:
            return False
        deferred.gen, deferred.previous_gen = str(gen), previous
        deferred.server = self._incarnation
        self.cache.put(("g", thread_id), deferred.gen, 16)
        return True

    def hold_locally(self, deferred: DeferredPublication, record: CheckpointRecord) -> None:
        """Keep a deferred checkpoint's values in L1 (under the withdrawn generation) so the
        release can publish every value the newest checkpoint needs."""
        assert deferred.gen is not None
        for b in record.blobs:
            data = b.data or b""
            key = ("b", record.thread_id, deferred.gen, record.checkpoint_ns, b.channel, b.version)
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
            if self._incarnation != deferred.server:
                # Another server: its cache was never withdrawn and L1 (which held the values)
                # was cleared. Make whatever it caches of the thread unreachable instead.
                published.clear()
                return [(BUMP, [self._gen_key(thread_id)], [])]
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
            replies = await self._batch("publish_deferred", compose)
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
            held: tuple[str, bytes] | None = self.cache.get(
                ("b", thread_id, gen, ns, channel, version)
            )
            if held is not None:
                return held
        return None

    async def invalidate(self, thread_ids: Sequence[str]) -> None:
        """Make every cached entry of these threads unreachable on every replica."""
        if not thread_ids:
            return

        bumps = functools.partial(self._bumps, thread_ids)
        try:
            await self._call("invalidate", lambda: self._commands(bumps))
        except RedisUnavailable:
            await self.mark_dirty(thread_ids)
