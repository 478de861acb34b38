"""``TieredCache``: LangGraph's node cache (``compile(cache=...)``) in-process and in Redis.

LangGraph calls ``cache.get`` with a task's ``(namespace, key)`` before running a node that has
a ``cache_policy``, and ``cache.set`` in the background after it ran. Here that is served by:

- L1, the saver's ``LocalCache`` (LRU, bounded in bytes), holding the serde's bytes, so a hit
  deserializes a fresh copy as LangGraph's ``InMemoryCache`` does;
- L2, Redis (optional), shared by every replica. A namespace's keys (``{prefix}nc:{<digest>}:
  <server run_id>:``) share a hash tag (one Cluster slot, one script) and name the server, so
  a restarted or failed-over Redis is an empty cache, as for the saver. Names are digests,
  values the serde's bytes. Entries live under the namespace's generation (``...:g``, a random
  token): a ``clear`` is one ``SET`` per namespace; old entries expire by their TTL.

TTLs hold on both levels (an entry copied into L1 keeps the time Redis had left it). Redis is
never a dependency: each round trip has a time limit and feeds the saver's ``TierBreaker``;
while it is open the cache is L1 alone (clears are kept for later) and no node fails for Redis.
Other replicas' clears reach L1 within ``refresh_interval_s``; undecodable Redis values are
deleted. Sync and async share one implementation: L1 is used from any thread under a lock,
what talks to Redis is a coroutine on the home loop of the saver's ``LoopBridge``."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import ormsgpack
from langgraph.cache.base import BaseCache, FullKey, Namespace, ValueT
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from redis.exceptions import RedisClusterException, RedisError

from langgraph_resilient._bridge import LoopBridge
from langgraph_resilient._local_cache import LocalCache
from langgraph_resilient._redis.breaker import TierBreaker
from langgraph_resilient._redis.client import RedisSettings, connect
from langgraph_resilient._redis.wire import LuaScript, ServerChanged, script_runner
from langgraph_resilient._urls import redact
from langgraph_resilient.checkpoint.settings import SaverSettings
from langgraph_resilient.errors import (
    ConfigurationError,
    SaverClosedError,
    SerializationError,
    TierUnavailableError,
    describe_error,
)

__all__ = ["TieredCache"]

log = logging.getLogger("langgraph_resilient.node_cache")
T = TypeVar("T")
Op = Callable[[], Coroutine[Any, Any, T]]

_MAGIC = b"LGRN1"  # leads every value written to Redis (then the serde's type, NUL, bytes)
_REDIS_ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError)

# Read some entries of one namespace. KEYS[1]: its generation key; ARGV[1]: its key base;
# ARGV[2..]: key digests. Returns {generation, value1, pttl1, value2, pttl2, ...}: the
# generation is false when the namespace has none (nothing written yet), a value when absent.
GET_LUA = """
local gen = redis.call('GET', KEYS[1])
local out = {gen}
for i = 2, #ARGV do
  local key = (gen and ARGV[1] .. gen .. ':' .. ARGV[i])
  local value = key and redis.call('GET', key)
  out[#out + 1] = value
  out[#out + 1] = value and redis.call('PTTL', key) or 0
end
return out
"""

# Write some entries of one namespace under its generation, which is created (ARGV[2], a fresh
# random token) if the namespace has none, and lives as long as its longest-lived entry may
# (ARGV[3] ms; once it expires, older entries are unreachable). ARGV[1]: the key base; then
# (key digest, value, ttl in ms) triples. Returns the generation written under.
SET_LUA = """
local gen = redis.call('GET', KEYS[1])
if not gen then gen = ARGV[2] end
redis.call('SET', KEYS[1], gen, 'PX', ARGV[3])
local base = ARGV[1] .. gen .. ':'
for i = 4, #ARGV, 3 do
  redis.call('SET', base .. ARGV[i], ARGV[i + 1], 'PX', ARGV[i + 2])
end
return gen
"""

GET, SET = LuaScript(GET_LUA), LuaScript(SET_LUA)


class _RedisUnavailable(Exception):
    """Redis failed, timed out, or its breaker is open: serve from L1 alone."""


Stamp = tuple[int, int]
_Group = tuple[Namespace, "_Space", Stamp, list[T]]  # items of one namespace (_grouped)


@dataclass(slots=True)
class _Space:
    """A namespace here. ``token`` is in its L1 keys: a clear or another Redis generation
    takes a new one, so older L1 entries are unreachable. ``gen``: the generation behind L1
    (``None``: unknown); ``stamp`` counts clears and generation changes, for answers to tell
    whether they are still current."""

    token: int
    gen: str | None
    digest: str
    clears: int = 0
    seen: int = 0

    @property
    def stamp(self) -> Stamp:
        return (self.clears, self.seen)


@dataclass(slots=True)
class _Entry:
    """A serialized value on its way to a level, and its time to live (``None``: forever)."""

    ns: Namespace
    key: str
    typed: tuple[str, bytes]
    ttl_s: float | None


class TieredCache(BaseCache[ValueT]):
    """LangGraph's ``BaseCache`` as an in-process LRU (bounded in bytes) over Redis.

    In-process only, nothing to enter::

        graph = builder.compile(cache=TieredCache(max_bytes=64 * 1024 * 1024))

    Shared by every replica through Redis (``with`` in sync programs, ``async with`` in async
    ones; :meth:`from_url` takes the Redis settings)::

        async with TieredCache.from_url("redis://cache:6379/0") as cache:
            graph = builder.compile(cache=cache)

    Args:
        max_bytes: bound of the in-process level (serialized bytes plus about 200 bytes per
            entry); ``0`` disables it.
        serde: serializer of the values; default LangGraph's ``JsonPlusSerializer``, as for
            ``ResilientSaver``; the saver's (an ``EncryptedSerializer``) caches under its rules.
        prefix: prefix of the Redis keys, as for the saver (lowercase letters, digits, ``_``).
    """

    def __init__(
        self,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        serde: SerializerProtocol | None = None,
        prefix: str = "lgr_",
    ) -> None:
        super().__init__(serde=serde or JsonPlusSerializer())
        if type(max_bytes) is not int or max_bytes < 0:
            raise ConfigurationError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
        SaverSettings(prefix=prefix)  # the saver's rule for prefixes, and its error message
        self.prefix = prefix
        self.redis_settings: RedisSettings | None = None
        self.refresh_interval_s = 1.0
        self.redis_required = False
        self.breaker = TierBreaker()  # 2 failures in a row: open 2 s; replaceable before enter
        self._local = LocalCache(max_bytes)
        self._lock = threading.Lock()  # L1 and the namespace table, used from any thread
        self._spaces: dict[Namespace, _Space] = {}
        self._tokens = itertools.count()
        self._pending: set[Namespace] = set()  # cleared here, not yet in Redis
        self._pending_all = False  # clear() of everything, not yet in Redis
        self._bridge = LoopBridge()
        self._client: Any = None
        self._runner: Any = None  # the saver's pipelined script runner (redis_wire)
        self._server = "-"  # the Redis server (run_id) keys are composed for, as in the saver
        self._open = self._probing = False
        self._refresh_task: asyncio.Task[None] | None = None

    @classmethod
    def from_url(
        cls,
        redis_url: str | None = None,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        serde: SerializerProtocol | None = None,
        prefix: str = "lgr_",
        socket_timeout_s: float = 0.25,
        connect_timeout_s: float = 0.5,
        key_ttl_s: int = 7 * 24 * 3600,
        refresh_interval_s: float = 1.0,
        redis_required: bool = False,
    ) -> TieredCache[Any]:
        """A cache over Redis at ``redis_url`` (any URL the saver takes), or in-process only.
        ``socket_timeout_s``: a round trip longer than twice this is a failure; ``key_ttl_s``:
        Redis expiry of entries cached with ``ttl=None``; ``refresh_interval_s``: bounds how
        long another replica's ``clear`` takes to reach this one's L1; ``redis_required``: fail
        on enter when Redis is unreachable (else start without it, use it once it answers)."""
        cache: TieredCache[Any] = cls(max_bytes=max_bytes, serde=serde, prefix=prefix)
        if not refresh_interval_s > 0:
            raise ConfigurationError(f"refresh_interval_s must be > 0, got {refresh_interval_s}")
        if redis_url is not None:
            limits: dict[str, Any] = {"socket_timeout_s": socket_timeout_s}
            limits.update(connect_timeout_s=connect_timeout_s, key_ttl_s=key_ttl_s)
            cache.redis_settings = RedisSettings(redis_url, **limits)
        cache.refresh_interval_s, cache.redis_required = refresh_interval_s, redis_required
        return cache

    async def __aenter__(self) -> TieredCache[ValueT]:
        if self.redis_settings is not None:
            self._bridge.attach(asyncio.get_running_loop())
            try:
                await self._connect(self.redis_settings)
            except BaseException:
                self._bridge.detach()
                raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.redis_settings is not None:
            try:
                await self._disconnect()
            finally:
                self._bridge.detach()

    def __enter__(self) -> TieredCache[ValueT]:
        if self.redis_settings is not None:
            self._bridge.start_thread()
            try:
                self._bridge.run(self._connect(self.redis_settings))
            except BaseException:
                self._bridge.stop_thread()
                raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.redis_settings is not None:
            try:
                self._bridge.run(self._disconnect())
            finally:
                self._bridge.stop_thread()

    async def _connect(self, settings: RedisSettings) -> None:
        client = connect(settings)
        runner = script_runner(client, settings.socket_timeout_s * 2)
        try:
            self._server = await asyncio.wait_for(runner.identify(), settings.connect_timeout_s * 2)
        except _REDIS_ERRORS as exc:
            why = f"cannot connect to {redact(settings.url)}: {describe_error(exc)}"
            if self.redis_required:
                await runner.close()
                await client.aclose()
                raise TierUnavailableError("redis", why) from exc
            log.warning("the node cache starts in-process only, Redis is unreachable: %s", why)
            self.breaker.trip()
        self._client, self._runner, self._open = client, runner, True
        self._refresh_task = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def _disconnect(self) -> None:
        self._open = False
        assert self._refresh_task is not None  # started by _connect
        self._refresh_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._refresh_task
        with contextlib.suppress(Exception):  # a dead connection is closed all the same
            await self._runner.close()
            await self._client.aclose()

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """The cached values of ``keys`` that are present and unexpired."""
        found, missing = self._get_local(keys)
        if missing and self._redis_usable():
            found.update(self._bridge.run(self._get_redis(missing)))
        return found

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """The cached values of ``keys`` that are present and unexpired."""
        found, missing = self._get_local(keys)
        if missing and self._redis_usable():
            found.update(await self._bridge.hop(self._get_redis(missing)))
        return found

    def set(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Cache each value for its TTL in seconds (``None``: no expiry)."""
        entries = self._encode(pairs)
        if entries and self._redis_usable():
            self._bridge.run(self._set_redis(entries))
        else:
            self._set_local(entries)

    async def aset(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Cache each value for its TTL in seconds (``None``: no expiry)."""
        entries = self._encode(pairs)
        if entries and self._redis_usable():
            await self._bridge.hop(self._set_redis(entries))
        else:
            self._set_local(entries)

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Delete the entries of ``namespaces`` (every entry when ``None``) on every replica."""
        self._clear_local(namespaces)
        if self._redis_usable():
            self._bridge.run(self._flush_clears())

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Delete the entries of ``namespaces`` (every entry when ``None``) on every replica."""
        self._clear_local(namespaces)
        if self._redis_usable():
            await self._bridge.hop(self._flush_clears())

    # ------------------------------------------------------------------ L1 (any thread)

    def _space(self, ns: Namespace) -> _Space:
        """The namespace's entry in the table (made on first use); call under the lock."""
        space = self._spaces.get(ns)
        if space is None:
            digest = hashlib.blake2b(ormsgpack.packb(list(ns)), digest_size=12).hexdigest()
            space = self._spaces[ns] = _Space(next(self._tokens), None, digest)
        return space

    def _base(self, space: _Space, server: str) -> str:
        """Per server: a restarted or failed-over one (clears lost?) is a new, empty cache."""
        return f"{self.prefix}nc:{{{space.digest}}}:{server}:"

    def _get_local(self, keys: Sequence[FullKey]) -> tuple[dict[FullKey, ValueT], list[FullKey]]:
        held, missing = [], []
        now = time.monotonic()
        with self._lock:
            for full in keys:
                entry = self._local.get((self._space(tuple(full[0])).token, full[1]))
                if entry is None or (entry[1] is not None and entry[1] <= now):
                    missing.append(full)
                else:
                    held.append((full, entry[0]))
        found: dict[FullKey, ValueT] = {}
        for full, typed in held:  # outside the lock: deserializing may take a while
            try:
                found[full] = self.serde.loads_typed(typed)
            except Exception as exc:  # a serde that refuses what it wrote (an allowlist)
                log.warning("a node cache entry does not load, treated as a miss: %s", exc)
                missing.append(full)
        return found, missing

    def _set_local(
        self, entries: Iterable[_Entry], stamps: Mapping[Namespace, Stamp] | None = None
    ) -> None:
        """Put entries in L1 unless their namespace's stamp moved since ``stamps`` were taken."""
        now = time.monotonic()
        with self._lock:
            for e in entries:
                space = self._space(e.ns)
                if stamps is None or space.stamp == stamps.get(e.ns):
                    deadline = None if e.ttl_s is None else now + e.ttl_s
                    cost = len(e.typed[0]) + len(e.typed[1])
                    self._local.put((space.token, e.key), (e.typed, deadline), cost)

    def _clear_local(self, namespaces: Sequence[Namespace] | None) -> None:
        with self._lock:
            if namespaces is None:
                self._local.clear()
                self._pending_all = True
            else:
                self._pending.update(tuple(ns) for ns in namespaces)
            self._renew(self._spaces if namespaces is None else map(tuple, namespaces))

    def _renew(self, namespaces: Iterable[Namespace]) -> None:
        """Cleared: the namespaces' L1 entries become unreachable. Call under the lock."""
        for ns in list(namespaces):
            space = self._space(ns)
            space.token, space.clears = next(self._tokens), space.clears + 1

    def _adopt(self, ns: Namespace, gen: str | None, stamp: Stamp) -> Stamp | None:
        """Record the generation Redis gave a request on ``ns`` made at ``stamp``. Returns the
        stamp to cache the answer under, or ``None`` when it may be outdated: the namespace
        was cleared since the request started, or another answer changed its generation."""
        with self._lock:
            space = self._space(ns)
            if space.clears != stamp[0] or (gen != space.gen and space.seen != stamp[1]):
                return None
            if gen != space.gen:  # cleared elsewhere, or first seen: L1 may be stale
                space.gen, space.seen, space.token = gen, space.seen + 1, next(self._tokens)
            return space.stamp

    def _encode(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> list[_Entry]:
        """Serialize every value first: a refusal raises before anything is cached."""
        entries = []
        for full, (value, ttl) in pairs.items():
            if ttl is not None and not (type(ttl) in (int, float) and ttl > 0):
                why = f"got {ttl!r} for {full!r}; nothing was cached"
                raise ConfigurationError(f"a cache TTL must be a positive number or None, {why}")
            try:
                typed = self.serde.dumps_typed(value)
            except Exception as exc:
                raise SerializationError(
                    f"cannot serialize the cached value of {full!r} ({type(value).__name__}): "
                    f"{exc}. Make it serializable by the cache's serde; nothing was cached"
                ) from exc
            entries.append(_Entry(tuple(full[0]), full[1], typed, ttl and float(ttl)))
        return entries

    # ------------------------------------------------------------------ L2 (home loop)

    def _redis_usable(self) -> bool:
        """Whether to try Redis now (from any thread; raises when the cache is not entered)."""
        if self.redis_settings is None:
            return False
        if not self._open:
            raise SaverClosedError(
                "the TieredCache has a Redis URL but is not open: use it inside `with` (sync "
                "programs) or `async with TieredCache.from_url(...) as cache:` (async ones)"
            )
        return not self.breaker.is_open or self.breaker.probe_due()

    async def _call(self, name: str, op: Op[T]) -> T:
        """A Redis call under the breaker (open: one caller probes once its time is over), after
        the clears kept so far, so that nothing cleared here is read back."""
        probe = self.breaker.is_open
        if probe:
            if not self.breaker.probe_due() or self._probing:
                raise _RedisUnavailable("breaker open")
            self._probing = True
        try:
            if self._pending or self._pending_all:
                await self._guarded("clear", self._apply_clears)
            return await self._guarded(name, op)
        finally:
            if probe:
                self._probing = False

    async def _guarded(self, name: str, op: Op[T]) -> T:
        # no time limit of its own: each round trip has the runner's (twice socket_timeout_s)
        try:
            result = await op()
        except _REDIS_ERRORS as exc:
            if self.breaker.failure():
                log.warning(
                    "the node cache is in-process only, Redis fails: %s", describe_error(exc)
                )
            raise _RedisUnavailable(f"{name}: {describe_error(exc)}") from exc
        if self.breaker.is_open:
            log.warning("Redis is back; the node cache uses it again")
        self.breaker.success()
        return result

    async def _send(self, compose: Callable[[str], list[Any]], scripts: bool = True) -> list[Any]:
        """Calls composed for the runner's server (again once if it is another, as the saver)."""
        send = self._runner.run if scripts else self._runner.commands
        try:
            return list(await send(compose(self._server), self._server))
        except ServerChanged as exc:
            self._server = exc.server_id
        return list(await send(compose(self._server), self._server))

    def _grouped(self, items: Iterable[tuple[Namespace, T]]) -> list[_Group[T]]:
        """Items by namespace, with the namespace and its stamp as they are now."""
        groups: dict[Namespace, list[T]] = {}
        for ns, item in items:
            groups.setdefault(tuple(ns), []).append(item)
        with self._lock:
            return [(ns, self._space(ns), self._space(ns).stamp, g) for ns, g in groups.items()]

    async def _get_redis(self, missing: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        asks = self._grouped(missing)

        def compose(server: str) -> list[Any]:
            bases = [(self._base(space, server), keys) for _, space, _, keys in asks]
            return [(GET, [b + "g"], [b, *map(_digest, keys)]) for b, keys in bases]

        try:
            replies = await self._call("get", functools.partial(self._send, compose))
        except _RedisUnavailable:
            return {}
        found: dict[FullKey, ValueT] = {}
        corrupt: list[str] = []
        for (ns, space, stamp, keys), reply in zip(asks, replies, strict=True):
            gen = None if reply[0] is None else reply[0].decode()
            entries = []
            for key, raw, pttl in zip(keys, reply[1::2], reply[2::2], strict=True):
                if raw is None:
                    continue
                try:
                    typed = _unpack(raw)
                    found[(ns, key)] = self.serde.loads_typed(typed)
                except Exception as exc:
                    log.warning("dropping an undecodable node cache entry from Redis: %s", exc)
                    corrupt.append(f"{self._base(space, self._server)}{gen}:{_digest(key)}")
                    continue
                entries.append(_Entry(ns, key, typed, pttl / 1000 if pttl >= 0 else None))
            if (current := self._adopt(ns, gen, stamp)) is not None:
                self._set_local(entries, {ns: current})
        if corrupt:
            drop = functools.partial(self._send, lambda _: [("DEL", k) for k in corrupt], False)
            with contextlib.suppress(_RedisUnavailable):
                await self._call("drop", drop)
        return found

    async def _set_redis(self, entries: Sequence[_Entry]) -> None:
        assert self.redis_settings is not None
        default_ms = self.redis_settings.key_ttl_s * 1000
        groups = self._grouped((e.ns, e) for e in entries)

        def compose(server: str) -> list[Any]:
            calls = []
            for _, space, _, group in groups:
                base = self._base(space, server)
                args: list[Any] = [base, os.urandom(8).hex(), default_ms]
                for e in group:
                    ms = default_ms if e.ttl_s is None else max(1, math.ceil(e.ttl_s * 1000))
                    args += [_digest(e.key), _pack(e.typed), ms]
                    args[2] = max(args[2], ms)
                calls.append((SET, [base + "g"], args))
            return calls

        try:
            gens = await self._call("set", functools.partial(self._send, compose))
        except _RedisUnavailable:
            self._set_local(entries, {ns: stamp for ns, _, stamp, _ in groups})
            return
        for (ns, _, stamp, group), gen in zip(groups, gens, strict=True):
            if (current := self._adopt(ns, gen.decode(), stamp)) is not None:
                self._set_local(group, {ns: current})

    async def _flush_clears(self) -> None:
        """Apply the clears kept so far; when Redis fails they stay kept for the next call."""
        with contextlib.suppress(_RedisUnavailable):
            await self._call("clear", functools.partial(asyncio.sleep, 0))

    async def _apply_clears(self) -> None:
        """New Redis generations for the namespaces cleared here (for every namespace in Redis
        after ``clear()``): their entries are unreachable everywhere and expire by TTL."""
        assert self.redis_settings is not None
        with self._lock:
            pending, self._pending = self._pending, set()
            everything, self._pending_all = self._pending_all, False
            spaces = {ns: self._space(ns) for ns in (self._spaces if everything else pending)}
        fresh = {ns: os.urandom(8).hex() for ns in spaces}
        ttl_ms = self.redis_settings.key_ttl_s * 1000  # as long as an entry may live (SET_LUA)
        try:
            found: list[str] = []
            if everything:  # keys of this server only: the others' are unreachable anyway
                pattern = f"{self.prefix}nc:{{*}}:{self._server}:g"  # no glob chars in either
                found = [k.decode() async for k in self._client.scan_iter(pattern, 1000)]

            def compose(server: str) -> list[Any]:
                mine = [(self._base(spaces[ns], server) + "g", g) for ns, g in fresh.items()]
                rest = [(key, os.urandom(8).hex()) for key in found]
                return [("SET", key, g, "PX", ttl_ms) for key, g in mine + rest]

            await self._send(compose, scripts=False)
        except BaseException:
            with self._lock:  # kept for the next call
                self._pending |= pending
                self._pending_all = self._pending_all or everything
            raise
        with self._lock:
            for ns, gen in fresh.items():
                self._space(ns).gen = gen
            self._renew(spaces)  # reads meanwhile may have filled L1 from the old generation

    async def _refresh_loop(self) -> None:
        """Notice other replicas' clears (generations); apply clears kept during an outage."""
        while True:
            await asyncio.sleep(self.refresh_interval_s)
            with self._lock:
                held = [(ns, space, space.stamp) for ns, space in self._spaces.items()]
                idle = not held and not self._pending_all
            if idle or (self.breaker.is_open and not self.breaker.probe_due()):
                continue

            def compose(server: str, held: list[Any] = held) -> list[Any]:
                return [("GET", self._base(space, server) + "g") for _, space, _ in held]

            try:
                gens = await self._call("refresh", functools.partial(self._send, compose, False))
            except _RedisUnavailable:
                continue
            except Exception:  # keep refreshing: this loop is what brings other clears here
                log.exception("refreshing the node cache's generations failed")
                continue
            for (ns, _, stamp), gen in zip(held, gens, strict=True):
                self._adopt(ns, None if gen is None else gen.decode(), stamp)


def _digest(key: str) -> str:
    """A key as Redis sees it: a digest, so no caller-chosen text reaches Redis."""
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def _pack(typed: tuple[str, bytes]) -> bytes:
    return _MAGIC + typed[0].encode() + b"\0" + typed[1]


def _unpack(raw: bytes) -> tuple[str, bytes]:
    cut = raw.find(b"\0", len(_MAGIC))
    if not raw.startswith(_MAGIC) or cut < 0:
        raise ValueError("not a value written by TieredCache")
    return raw[len(_MAGIC) : cut].decode(), raw[cut + 1 :]
