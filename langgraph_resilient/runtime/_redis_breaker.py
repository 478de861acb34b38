"""Shared circuit-breaker state in Redis: the local state machine of ``breaker.py`` as atomic
Lua scripts, so every replica sees one breaker.

Keys (one Redis Cluster slot per breaker thanks to the ``{name}`` hash tag)::

    {prefix}breaker:{<name>}:state    hash: st, until (ms), hs (half-open successes),
                                            calls, fails, slow (count-window totals)
    {prefix}breaker:{<name>}:window   count window: list of outcome codes (newest first)
                                      time window: hash c<sec>/f<sec>/s<sec> -> counts
    {prefix}breaker:{<name>}:probes   zset: probe id -> expiry (ms); dead probes drop out

Time comes from the Redis server (``TIME``), so replicas with skewed clocks agree on when an
open period ends. The thresholds travel with each call: replicas sharing a breaker name should
use the same settings.

When Redis fails (connection, timeout, script error), the breaker switches to its local state
machine, seeded with the last shared state it saw, and tries Redis again ``retry_s`` later.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import threading
import uuid
import weakref
from typing import Any

from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from langgraph_resilient._redis.client import RedisSettings, connect, connect_sync
from langgraph_resilient.runtime.breaker_state import (
    BreakerSettings,
    CircuitState,
    LocalBreaker,
    Transition,
)

__all__ = ["RedisBreakerBackend"]

logger = logging.getLogger(__name__)

_BACKEND_ERRORS: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)

# Admit a call. KEYS: state, window, probes. ARGV: probe id, half_open_max_calls,
# probe_ttl_ms, key_ttl_ms. Returns {allowed 0/1, state, retry_after_ms (-1 unknown),
# previous state if this call changed it else ''}.
ACQUIRE_LUA = """
local st = redis.call('HGET', KEYS[1], 'st')
if (not st) or st == 'closed' then return {1, 'closed', 0, ''} end
if st == 'forced_open' then return {0, st, -1, ''} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prev = ''
if st == 'open' then
  local open_until = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
  if now < open_until then return {0, st, open_until - now, ''} end
  redis.call('HSET', KEYS[1], 'st', 'half_open', 'hs', 0)
  redis.call('DEL', KEYS[3])
  prev = 'open'
  st = 'half_open'
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
local hs = tonumber(redis.call('HGET', KEYS[1], 'hs') or '0')
if redis.call('ZCARD', KEYS[3]) < tonumber(ARGV[2]) - hs then
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[1])
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {1, st, 0, prev}
end
return {0, st, 0, prev}
"""

# Record an outcome. KEYS: state, window, probes. ARGV: probe id ('' for a call admitted while
# closed), failed 0/1, slow 0/1, window kind ('count'/'time'), window size, minimum calls,
# failure rate threshold, slow rate threshold (> 1 disables), open_ms, half_open_max_calls,
# key_ttl_ms. Returns {state, previous state if this call changed it else '', reason}.
RECORD_LUA = """
local st = redis.call('HGET', KEYS[1], 'st') or 'closed'
local failed = tonumber(ARGV[2])
local slow = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function trip(reason)
  redis.call('HSET', KEYS[1], 'st', 'open', 'until', now + tonumber(ARGV[9]), 'hs', 0,
             'calls', 0, 'fails', 0, 'slow', 0)
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[11])
  return {'open', st, reason}
end
if st == 'half_open' then
  if ARGV[1] == '' or redis.call('ZREM', KEYS[3], ARGV[1]) == 0 then return {st, '', ''} end
  if failed == 1 then return trip('probe_failed') end
  if slow == 1 then return trip('probe_slow') end
  local hs = redis.call('HINCRBY', KEYS[1], 'hs', 1)
  if hs >= tonumber(ARGV[10]) then
    redis.call('HSET', KEYS[1], 'st', 'closed', 'hs', 0, 'calls', 0, 'fails', 0, 'slow', 0)
    redis.call('DEL', KEYS[2], KEYS[3])
    return {'closed', 'half_open', 'probes_succeeded'}
  end
  return {st, '', ''}
end
if st ~= 'closed' then return {st, '', ''} end
local size = tonumber(ARGV[5])
local calls, fails, slows
if ARGV[4] == 'count' then
  redis.call('LPUSH', KEYS[2], failed + 2 * slow)
  calls = redis.call('HINCRBY', KEYS[1], 'calls', 1)
  fails = redis.call('HINCRBY', KEYS[1], 'fails', failed)
  slows = redis.call('HINCRBY', KEYS[1], 'slow', slow)
  if calls > size then
    local old = tonumber(redis.call('RPOP', KEYS[2]) or '0')
    calls = redis.call('HINCRBY', KEYS[1], 'calls', -1)
    fails = redis.call('HINCRBY', KEYS[1], 'fails', 0 - (old % 2))
    slows = redis.call('HINCRBY', KEYS[1], 'slow', 0 - math.floor(old / 2))
  end
else
  local sec = math.floor(now / 1000)
  redis.call('HINCRBY', KEYS[2], 'c' .. sec, 1)
  if failed == 1 then redis.call('HINCRBY', KEYS[2], 'f' .. sec, 1) end
  if slow == 1 then redis.call('HINCRBY', KEYS[2], 's' .. sec, 1) end
  calls, fails, slows = 0, 0, 0
  local all = redis.call('HGETALL', KEYS[2])
  for i = 1, #all, 2 do
    local field = all[i]
    if tonumber(string.sub(field, 2)) <= sec - size then
      redis.call('HDEL', KEYS[2], field)
    else
      local kind = string.sub(field, 1, 1)
      local v = tonumber(all[i + 1])
      if kind == 'c' then calls = calls + v
      elseif kind == 'f' then fails = fails + v
      else slows = slows + v end
    end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[11])
redis.call('PEXPIRE', KEYS[2], ARGV[11])
if calls >= tonumber(ARGV[6]) then
  if fails / calls >= tonumber(ARGV[7]) then return trip('failure_rate') end
  if slows / calls >= tonumber(ARGV[8]) then return trip('slow_call_rate') end
end
return {'closed', '', ''}
"""

# Manual control. KEYS: state, window, probes. ARGV: target ('closed', 'open',
# 'forced_open'), open_ms, key_ttl_ms. Returns the previous state.
FORCE_LUA = """
local prev = redis.call('HGET', KEYS[1], 'st') or 'closed'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'st', ARGV[1], 'until', now + tonumber(ARGV[2]), 'hs', 0,
           'calls', 0, 'fails', 0, 'slow', 0)
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return prev
"""

# Read the state. KEYS: state. Returns {state, ms until the open period ends}.
READ_LUA = """
local st = redis.call('HGET', KEYS[1], 'st') or 'closed'
if st ~= 'open' then return {st, 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local left = tonumber(redis.call('HGET', KEYS[1], 'until') or '0') - now
if left <= 0 then return {'half_open', 0} end
return {st, left}
"""


class _Script:
    """A Lua source and its SHA1 (for EVALSHA)."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


ACQUIRE = _Script(ACQUIRE_LUA)
RECORD = _Script(RECORD_LUA)
FORCE = _Script(FORCE_LUA)
READ = _Script(READ_LUA)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisBreakerBackend:
    """The shared-state half of a ``CircuitBreaker`` (sync and async transports, one script)."""

    def __init__(
        self,
        name: str,
        settings: BreakerSettings,
        local: LocalBreaker,
        *,
        url: str | None,
        client: Any,
        aclient: Any,
        prefix: str,
        timeout_s: float,
        retry_s: float,
        key_ttl_s: float,
    ) -> None:
        self.name = name
        self.settings = settings
        self.local = local
        """The state machine used while Redis is unreachable (seeded from Redis's state)."""
        self.url = url
        # The package's one client factory (plain, TLS, Sentinel and Cluster URLs), without
        # client-side retries: a breaker must learn of trouble at once.
        self._settings = (
            None
            if url is None
            else RedisSettings(url=url, socket_timeout_s=timeout_s, connect_timeout_s=timeout_s)
        )
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        base = f"{prefix}breaker:{{{name}}}"
        self.keys = [f"{base}:state", f"{base}:window", f"{base}:probes"]
        self.key_ttl_ms = int(key_ttl_s * 1000)
        self._client = client
        self._aclient = aclient
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._down_until: float | None = None
        self._observed = CircuitState.CLOSED
        self._observed_open_left_s = 0.0
        self._probe_ids = itertools.count(1)
        self._probe_prefix = f"{os.getpid()}-{uuid.uuid4().hex[:8]}-"
        b = settings
        self._record_args = [
            b.window,
            b.window_size,
            b.minimum_calls,
            repr(b.failure_rate_threshold),
            repr(b.slow_call_rate_threshold if b.timed else 2.0),
            int(b.open_for_s * 1000),
            b.half_open_max_calls,
            self.key_ttl_ms,
        ]
        self._acquire_args = [b.half_open_max_calls, int(b.probe_ttl_s * 1000), self.key_ttl_ms]

    # ------------------------------------------------------------------ clients and scripts

    def _sync_client(self) -> Any:
        if self._client is None:
            if self._settings is None:
                raise RedisError("this breaker was given only an async Redis client")
            with self._lock:
                if self._client is None:
                    self._client = connect_sync(self._settings)
        return self._client

    def _async_client(self) -> Any:
        if self._aclient is not None:
            return self._aclient
        if self._settings is None:
            raise RedisError("this breaker was given only a sync Redis client")
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            client = self._aclients[loop] = connect(self._settings)
        return client

    @staticmethod
    def _eval(client: Any, script: _Script, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA, loading the script on first use (or after a SCRIPT FLUSH)."""
        try:
            return client.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return client.eval(script.source, len(keys), *keys, *args)

    @staticmethod
    async def _aeval(client: Any, script: _Script, keys: list[str], args: list[Any]) -> Any:
        """Async :meth:`_eval`."""
        try:
            return await client.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(script.source, len(keys), *keys, *args)

    # ------------------------------------------------------------------ failover

    def _usable(self) -> bool:
        down_until = self._down_until
        if down_until is None:
            return True
        return self.local.clock.monotonic() >= down_until

    def _went_down(self, exc: BaseException) -> None:
        first = self._down_until is None
        self._down_until = self.local.clock.monotonic() + self.retry_s
        if first:
            logger.warning(
                "circuit breaker %r: Redis unavailable (%s); using local state for %.1fs",
                self.name,
                exc,
                self.retry_s,
            )
            self.local.seed(self._observed, self._observed_open_left_s)
            self.local.signals.backend("local", f"{type(exc).__name__}: {exc}")

    def _came_back(self) -> None:
        if self._down_until is not None:
            self._down_until = None
            logger.info("circuit breaker %r: Redis is back", self.name)
            self.local.signals.backend("redis", None)

    def _observe(self, state: CircuitState, previous: str, reason: str) -> None:
        old = self._observed
        self._observed = state
        if state is not CircuitState.OPEN:
            self._observed_open_left_s = 0.0
        if old is not state:
            self.local.signals.transition(
                Transition(old, state, reason or ("remote" if not previous else "redis")),
                "redis",
            )

    # ------------------------------------------------------------------ results

    def _after_acquire(self, node: str, probe_id: str, result: Any) -> str:
        allowed, state_raw, retry_ms, previous = result
        state = CircuitState(_text(state_raw))
        retry_after = None if int(retry_ms) < 0 else int(retry_ms) / 1000.0
        if state is CircuitState.OPEN and retry_after is not None:
            self._observed_open_left_s = retry_after
        self._observe(state, _text(previous), "open_period_elapsed" if previous else "")
        if not int(allowed):
            self.local.signals.reject(node, state, retry_after)
        return probe_id if state is CircuitState.HALF_OPEN else ""

    def _after_record(self, result: Any) -> None:
        state_raw, previous, reason = result
        state = CircuitState(_text(state_raw))
        if state is CircuitState.OPEN:
            self._observed_open_left_s = self.settings.open_for_s
        self._observe(state, _text(previous), _text(reason))

    def _new_probe_id(self) -> str:
        return f"{self._probe_prefix}{next(self._probe_ids)}"

    # ------------------------------------------------------------------ sync transport

    def acquire(self, node: str) -> Any:
        if not self._usable():
            return self.local.acquire(node)
        probe_id = self._new_probe_id()
        try:
            client = self._sync_client()
            result = self._eval(client, ACQUIRE, self.keys, [probe_id, *self._acquire_args])
        except _BACKEND_ERRORS as exc:
            self._went_down(exc)
            return self.local.acquire(node)
        self._came_back()
        return self._after_acquire(node, probe_id, result)

    def record(self, permit: Any, failed: int, slow: int) -> None:
        if not isinstance(permit, str) or not self._usable():
            self.local.record(permit if not isinstance(permit, str) else None, failed, slow)
            return
        try:
            client = self._sync_client()
            result = self._eval(
                client, RECORD, self.keys, [permit, failed, slow, *self._record_args]
            )
        except _BACKEND_ERRORS as exc:
            self._went_down(exc)
            self.local.record(None, failed, slow)
            return
        self._came_back()
        self._after_record(result)

    def release(self, permit: Any) -> None:
        if not isinstance(permit, str):
            self.local.release(permit)
            return
        if not permit or not self._usable():
            return
        try:
            self._sync_client().zrem(self.keys[2], permit)
        except _BACKEND_ERRORS as exc:
            self._went_down(exc)

    def force(self, target: CircuitState, open_for_s: float) -> None:
        """Manual control, in Redis and in the local fallback alike."""
        try:
            client = self._sync_client()
            self._eval(
                client, FORCE, self.keys, [target.value, int(open_for_s * 1000), self.key_ttl_ms]
            )
        except _BACKEND_ERRORS as exc:
            self._went_down(exc)
        else:
            self._came_back()
            self._observed = target
            self._observed_open_left_s = open_for_s if target is CircuitState.OPEN else 0.0
        self.local.set(target, "manual", open_for_s)

    def read_state(self) -> CircuitState | None:
        if not self._usable():
            return None
        try:
            client = self._sync_client()
            state_raw, _left_ms = self._eval(client, READ, self.keys[:1], [])
        except _BACKEND_ERRORS as exc:
            self._went_down(exc)
            return None
        self._came_back()
        return CircuitState(_text(state_raw))

    # ------------------------------------------------------------------ async transport

    async def aacquire(self, node: str) -> Any:
        if not self._usable():
            return self.local.acquire(node)
        probe_id = self._new_probe_id()
        try:
            client = self._async_client()
            result = await self._aeval(client, ACQUIRE, self.keys, [probe_id, *self._acquire_args])
        except _BACKEND_ERRORS as exc:
            self._went_down(exc)
            return self.local.acquire(node)
        self._came_back()
        return self._after_acquire(node, probe_id, result)

    async def arecord(self, permit: Any, failed: int, slow: int) -> None:
        if not isinstance(permit, str) or not self._usable():
            self.local.record(permit if not isinstance(permit, str) else None, failed, slow)
            return
        try:
            client = self._async_client()
            result = await self._aeval(
                client, RECORD, self.keys, [permit, failed, slow, *self._record_args]
            )
        except _BACKEND_ERRORS as exc:
            self._went_down(exc)
            self.local.record(None, failed, slow)
            return
        self._came_back()
        self._after_record(result)

    async def arelease(self, permit: Any) -> None:
        if not isinstance(permit, str):
            self.local.release(permit)
            return
        if not permit or not self._usable():
            return
        try:
            await self._async_client().zrem(self.keys[2], permit)
        except _BACKEND_ERRORS as exc:
            self._went_down(exc)

    def release_nowait(self, permit: Any) -> None:
        """Release from a cancelled caller: in a task of its own, since the caller cannot wait.

        If even that fails, the probe expires after ``probe_ttl_s``.
        """
        if not isinstance(permit, str):
            self.local.release(permit)
            return
        if not permit:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.release(permit)
            return
        task = loop.create_task(self._release_quietly(permit))
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)

    async def _release_quietly(self, permit: str) -> None:
        with contextlib.suppress(*_BACKEND_ERRORS):
            await self._async_client().zrem(self.keys[2], permit)


#: Strong references to fire-and-forget release tasks (asyncio keeps only weak ones).
_BACKGROUND: set[asyncio.Task[None]] = set()
