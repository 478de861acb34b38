"""Single-writer thread leases with fencing epochs.

``saver.lock_thread(thread_id)`` returns a :class:`ThreadLock`; entering it (``async with`` or
``with``) yields a :class:`Lease`. While the lease is held, every ``put`` and ``put_writes`` the
saver makes to the thread carries the lease's *epoch* and is checked against the thread's stored
epoch inside the durable write's own transaction: once another worker has taken the lease over
(with a larger epoch), this worker's writes are refused with ``StaleLeaseError`` and write
nothing, even if it was paused for minutes and never noticed.

Where the lease lives:

- **Redis** (when the saver has a Redis tier and it answers): the key
  ``{prefix}{thread_id}:lease`` holds the holder's token and expires after ``ttl_s``; the hash
  ``{prefix}{thread_id}:epoch`` holds the epoch counter. Both carry the ``{thread_id}`` hash tag.
  Taking the lease is one Lua call (``SET NX PX`` plus the counter); renewing is a Lua
  compare-and-pexpire every ``ttl_s / 3``; releasing is a Lua compare-and-delete.
- **The durable store** (embedded SQLite, no ``redis_url``, or Redis down): the thread's row in
  the ``threads`` table holds the token and expiry next to the fencing epoch, taken with one
  conditional upsert that also raises the epoch.

Epochs form one increasing sequence per thread across both places and across Redis restarts:
see ``docs/lease.md`` for the argument (epoch *bands*: Redis issues epochs in odd bands only and
has the durable store confirm each new band before using it; the store lease uses even bands).

``langgraph_resilient.checkpoint.exclusive.ExclusiveGraph`` holds the lease around every call
of a graph (``with_resilience(..., exclusive_threads=True)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import random
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from langgraph_resilient._aio import STOP_TIMEOUT_S, cancelling, stop_tasks
from langgraph_resilient.checkpoint.redis_wire import LuaScript
from langgraph_resilient.checkpoint.store import EPOCH_BAND
from langgraph_resilient.errors import (
    ConfigurationError,
    LockTimeoutError,
    ResilientError,
    StaleLeaseError,
    TierUnavailableError,
    describe_error,
)
from langgraph_resilient.observability import metrics

if TYPE_CHECKING:
    from langgraph_resilient.checkpoint.redis_tier import RedisTier
    from langgraph_resilient.checkpoint.saver import ResilientSaver

__all__ = [
    "Lease",
    "LeaseEvent",
    "ThreadLock",
    "add_lease_hook",
]

log = logging.getLogger("langgraph_resilient.lease")

G = TypeVar("G")

# ---------------------------------------------------------------------------------- Lua
# KEYS[1] is the lease key (value: the holder's token, with a PX expiry). KEYS[2] is the epoch
# hash: `n` = the last epoch issued; `ok` = the first epoch of the band the durable store has
# confirmed (its stored epoch was raised to at least that number) and `okg` = the thread's cache
# generation (KEYS[3], the Redis tier's `g` key) when it was confirmed. The tier bumps `g` for
# every thread written or leased while Redis was unreachable (its dirty-thread repair), which
# makes the next acquisition check the durable store again.

# Take the lease if nobody holds it and issue the next epoch, in one round trip. A missing
# counter (new thread, or Redis lost its data) starts at ARGV[3], the first epoch of band 1.
# ARGV: token, ttl ms, seed, band size, then tokens of this process whose Redis call timed out
# (Redis may have run it anyway): a lease held by one of those is taken over, not waited for.
# Returns {0, pttl} when held, else {1, epoch, status, g}: status 1 = band confirmed at this
# generation, 0 = band unconfirmed, 2 = band confirmed at an older generation (revalidate
# against the store).
ACQUIRE_LUA = """
local holder = redis.call('GET', KEYS[1])
if holder then
  local mine = false
  for i = 5, #ARGV do
    if holder == ARGV[i] then mine = true end
  end
  if not mine then return {0, redis.call('PTTL', KEYS[1])} end
end
if redis.call('HEXISTS', KEYS[2], 'n') == 0 then
  redis.call('HSET', KEYS[2], 'n', ARGV[3])
end
local epoch = redis.call('HINCRBY', KEYS[2], 'n', 1)
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local band = epoch - epoch % tonumber(ARGV[4])
local gen = redis.call('GET', KEYS[3]) or '0'
local conf = redis.call('HMGET', KEYS[2], 'ok', 'okg')
if tonumber(conf[1] or '-1') ~= band then return {1, epoch, 0, gen} end
if conf[2] == gen then return {1, epoch, 1, gen} end
return {1, epoch, 2, gen}
"""

# Record that the durable store confirmed the band (first epoch ARGV[2]) at generation ARGV[3],
# if the lease is still the caller's (ARGV[1]): a lease lost meanwhile is not handed out.
# Returns 1|0.
CONFIRM_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local ok = tonumber(redis.call('HGET', KEYS[2], 'ok') or '-1')
if ok <= tonumber(ARGV[2]) then redis.call('HSET', KEYS[2], 'ok', ARGV[2], 'okg', ARGV[3]) end
return 1
"""

# Renew: compare-and-pexpire. ARGV: token, ttl ms. Returns 1, or 0 when the lease is gone or
# another token holds it.
RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# Release: compare-and-delete (never another holder's lease). ARGV: token. Returns 1|0.
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Move the counter up to ARGV[1] (the first epoch of a band the store has not confirmed) if it is
# lower, then release ARGV[2]'s lease if it still holds it ('' = none). Used when the store
# refused a band, and to repair a counter that fell behind the store's epoch. Returns 1.
FLOOR_LUA = """
local n = tonumber(redis.call('HGET', KEYS[2], 'n') or '-1')
if n < tonumber(ARGV[1]) then redis.call('HSET', KEYS[2], 'n', ARGV[1]) end
if ARGV[2] ~= '' and redis.call('GET', KEYS[1]) == ARGV[2] then redis.call('DEL', KEYS[1]) end
return 1
"""

# A lease held in the durable store sees Redis again: move the counter up to ARGV[1] (so the
# next Redis epoch is in a band the store must confirm, which waits for this lease's row) and
# take the lease key for the token if it is free. ARGV: floor, token, ttl ms. Returns 1 when the
# key is the token's, 0 when another token holds it.
CLAIM_LUA = """
local n = tonumber(redis.call('HGET', KEYS[2], 'n') or '-1')
if n < tonumber(ARGV[1]) then redis.call('HSET', KEYS[2], 'n', ARGV[1]) end
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

REDIS_BACKEND = "redis"
_SCRIPT_NAMES = {
    ACQUIRE_LUA: "acquire",
    CONFIRM_LUA: "confirm",
    RENEW_LUA: "renew",
    RELEASE_LUA: "release",
    FLOOR_LUA: "floor",
    CLAIM_LUA: "claim",
}


def _band_start(epoch: int) -> int:
    return epoch - epoch % EPOCH_BAND


def _redis_floor(epoch: int) -> int:
    """The first epoch of the first odd (Redis) band above ``epoch``'s band."""
    band = epoch // EPOCH_BAND + 1
    if band % 2 == 0:
        band += 1
    return band * EPOCH_BAND


class _RedisDown(Exception):
    """A Redis call failed in a way that means "use the durable store" (``__cause__``)."""


def _new_token() -> str:
    return f"{os.getpid()}-{secrets.token_hex(8)}"


# ---------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class LeaseEvent:
    """Something a lease did, for metrics and logs (see :func:`add_lease_hook`).

    ``kind`` is one of:

    - ``"acquired"``: detail ``waited_s``, ``attempts`` (> 1 means the lease was contended);
    - ``"released"``: detail ``held_s``;
    - ``"lost"``: the holder learned that its lease expired or was taken over; detail
      ``reason``. Count these (``langgraph_lease_lost_total``): each one is a stalled worker;
    - ``"failover"``: the lease moved from Redis to the durable store (Redis failed while it
      was held), or was taken in the durable store because Redis was down; detail ``reason``;
    - ``"timeout"``: ``lock_thread`` gave up after ``wait_s`` (``LockTimeoutError``).
    """

    kind: str
    thread_id: str
    epoch: int | None
    backend: str | None
    detail: Mapping[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)


LeaseHook = Callable[[LeaseEvent], None]
_hooks: list[LeaseHook] = []
_hooks_lock = threading.Lock()


def add_lease_hook(callback: LeaseHook) -> Callable[[], None]:
    """Call ``callback(event)`` for every :class:`LeaseEvent` of every lease in this process.

    Returns a function that removes the hook. Hooks run inline, on the saver's event loop
    thread: keep them quick (count a metric, log). An exception in a hook is logged and
    swallowed. Example, counting lost leases with prometheus-client::

        LOST = Counter("langgraph_lease_lost_total", "Thread leases lost while held")
        add_lease_hook(lambda e: LOST.inc() if e.kind == "lost" else None)
    """
    with _hooks_lock:
        _hooks.append(callback)

    def remove() -> None:
        with _hooks_lock:
            if callback in _hooks:
                _hooks.remove(callback)

    return remove


def _emit(kind: str, thread_id: str, epoch: int | None, backend: str | None, **detail: Any) -> None:
    _count(kind, detail)
    hooks = tuple(_hooks)
    if not hooks:
        return
    event = LeaseEvent(kind, thread_id, epoch, backend, detail)
    for hook in hooks:
        try:
            hook(event)
        except Exception:
            log.exception("lease hook %r failed", hook)


def _count(kind: str, detail: dict[str, Any]) -> None:
    """The lease's Prometheus metrics (``langgraph_lease_*``)."""
    if kind == "acquired":
        contended = "true" if detail.get("attempts", 1) > 1 else "false"
        metrics.LEASE_ACQUISITIONS.labels(contended).inc()
        metrics.LEASE_WAIT_SECONDS.observe(detail.get("waited_s", 0.0))
    elif kind == "lost":
        metrics.LEASE_LOST.inc()
    elif kind == "failover":
        metrics.LEASE_FAILOVERS.inc()
    elif kind == "timeout":
        metrics.LEASE_TIMEOUTS.inc()
        metrics.LEASE_WAIT_SECONDS.observe(detail.get("waited_s", 0.0))


# ---------------------------------------------------------------------------------- Lease


class Lease:
    """The single-writer lease of one thread, held by this process (from ``lock_thread``).

    While you hold it, every checkpoint write the saver makes to ``thread_id`` is fenced with
    ``epoch``. If the lease is lost (this worker stalled past ``ttl_s`` and another worker took
    it, or the key vanished), ``lost`` becomes true as soon as the background renewal notices
    (within ``ttl_s / 3``): stop working on the thread. Writes made anyway are refused with
    ``StaleLeaseError`` once the new holder has written, and write nothing.

    Ways to learn about a loss: poll ``lease.lost``; ``lease.lost_event.wait(timeout)`` (sync);
    ``await lease.wait_lost()`` (async, any event loop); ``lease.on_lost(callback)``.
    """

    def __init__(
        self, thread_id: str, token: str, epoch: int, backend: str, ttl_s: float, expires_at: float
    ) -> None:
        self.thread_id = thread_id
        """The thread this lease is for."""
        self.token = token
        """Unique token of this holding (``<pid>-<random>``), stored in Redis or the row."""
        self.epoch = epoch
        """The fencing epoch: larger than every epoch handed out before for this thread."""
        self.backend = backend
        """Where the lease lives now: ``"redis"``, ``"postgres"`` or ``"sqlite"``."""
        self.ttl_s = ttl_s
        """Lease time to live; renewed every ``ttl_s / 3`` while held."""
        self.expires_at = expires_at
        """``time.monotonic()`` by which the lease expires unless renewed (it is renewed in the
        background; see ``remaining_s``)."""
        self.acquired_at = time.monotonic()
        """``time.monotonic()`` when the lease was acquired."""
        self.lost_reason: str | None = None
        """Why the lease was lost, or ``None``."""
        self.released = False
        """True once the ``with`` block that took the lease has exited."""
        self._lost = threading.Event()
        self._callbacks: list[Callable[[Lease], None]] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "lost" if self.lost else "released" if self.released else "held"
        return (
            f"Lease(thread_id={self.thread_id!r}, epoch={self.epoch}, backend={self.backend!r}, "
            f"{state})"
        )

    @property
    def lost(self) -> bool:
        """True once the holder learned that the lease expired or was taken over."""
        return self._lost.is_set()

    @property
    def lost_event(self) -> threading.Event:
        """Set when the lease is lost; ``lease.lost_event.wait(timeout)`` from sync code."""
        return self._lost

    @property
    def remaining_s(self) -> float:
        """Seconds until the lease expires unless renewed (negative: past its expiry)."""
        return self.expires_at - time.monotonic()

    def on_lost(self, callback: Callable[[Lease], None]) -> None:
        """Call ``callback(lease)`` once if the lease is lost (at once if it already is).

        The callback runs on the saver's event loop thread: keep it quick (set a flag, cancel a
        task with ``loop.call_soon_threadsafe``...). Exceptions are logged and swallowed.
        """
        with self._lock:
            if not self._lost.is_set():
                self._callbacks.append(callback)
                return
        self._call(callback)

    def _call(self, callback: Callable[[Lease], None]) -> None:
        try:
            callback(self)
        except Exception:
            log.exception("lease on_lost callback %r failed", callback)

    async def wait_lost(self) -> None:
        """Return once the lease is lost. Works from any event loop (not only the saver's);
        bound it with ``asyncio.timeout(...)`` or run it as a task next to your work."""
        if self.lost:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not done.done():
                done.set_result(None)

        def wake(_: Lease) -> None:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(settle)

        self.on_lost(wake)
        try:
            await done
        finally:
            with self._lock:
                if wake in self._callbacks:
                    self._callbacks.remove(wake)

    def _mark_lost(self, reason: str) -> None:
        with self._lock:
            if self._lost.is_set():
                return
            self.lost_reason = reason
            self._lost.set()
            callbacks, self._callbacks = self._callbacks, []
        log.warning(
            "thread %r: lease (epoch %d) lost: %s. Further writes under it will be refused with "
            "StaleLeaseError once the new holder writes",
            self.thread_id,
            self.epoch,
            reason,
        )
        _emit("lost", self.thread_id, self.epoch, self.backend, reason=reason)
        for callback in callbacks:
            self._call(callback)


# ---------------------------------------------------------------------------------- per saver

_HELD: contextvars.ContextVar[tuple[tuple[int, str, Lease], ...]] = contextvars.ContextVar(
    "langgraph_resilient_held_leases", default=()
)
"""Leases entered in this context (task/thread), so a nested lock_thread is a no-op."""


def _held_lease(saver: Any, thread_id: str) -> Lease | None:
    for saver_id, tid, lease in _HELD.get():
        if saver_id == id(saver) and tid == thread_id and not lease.released:
            return lease
    return None


@dataclass(frozen=True)
class _Scripts:
    acquire: LuaScript
    confirm: LuaScript
    renew: LuaScript
    release: LuaScript
    floor: LuaScript
    claim: LuaScript


_LEASE_SCRIPTS = _Scripts(
    *(
        LuaScript(s)
        for s in (ACQUIRE_LUA, CONFIRM_LUA, RENEW_LUA, RELEASE_LUA, FLOOR_LUA, CLAIM_LUA)
    )
)


class _SaverLeases:
    """Lease state of one saver on one home loop: in-process locks and orphaned tokens."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.local: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self.held: set[ThreadLock] = set()
        """Locks holding a lease now: released by :func:`release_held_leases` at close."""
        self._orphans: dict[str, list[tuple[str, float]]] = {}

    def add_orphan(self, thread_id: str, token: str, ttl_s: float) -> None:
        """A Redis call that may set ``token``'s lease timed out: Redis may still run it."""
        self._orphans.setdefault(thread_id, []).append((token, time.monotonic() + ttl_s + 1))

    def orphans(self, thread_id: str) -> list[str]:
        """This process's tokens that may hold an unwanted lease on the thread (until expiry)."""
        entries = self._orphans.get(thread_id)
        if not entries:
            return []
        now = time.monotonic()
        live = [(token, until) for token, until in entries if until > now]
        if live:
            self._orphans[thread_id] = live
        else:
            del self._orphans[thread_id]
        return [token for token, _ in live]

    async def lock_local(self, thread_id: str, limit_s: float) -> bool:
        """Serialize the holders of one thread within this saver (no Redis polling for them)."""
        entry = self.local.get(thread_id)
        if entry is None:
            entry = self.local[thread_id] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            if not lock.locked():
                await lock.acquire()
            else:
                async with asyncio.timeout(max(limit_s, 0.0)):
                    await lock.acquire()
        except TimeoutError:
            self._forget(thread_id, entry)
            return False
        except BaseException:
            self._forget(thread_id, entry)
            raise
        return True

    def unlock_local(self, thread_id: str) -> None:
        entry = self.local.get(thread_id)
        if entry is None:
            return
        entry[0].release()
        self._forget(thread_id, entry)

    def _forget(self, thread_id: str, entry: tuple[asyncio.Lock, list[int]]) -> None:
        entry[1][0] -= 1
        if entry[1][0] <= 0 and self.local.get(thread_id) is entry:
            del self.local[thread_id]


_STATES: weakref.WeakKeyDictionary[Any, _SaverLeases] = weakref.WeakKeyDictionary()


def _state_of(saver: Any) -> _SaverLeases:
    loop = asyncio.get_running_loop()
    state = _STATES.get(saver)
    if state is None or state.loop is not loop:
        state = _STATES[saver] = _SaverLeases(loop)
    return state


async def release_held_leases(saver: Any) -> None:
    """Release every lease the saver still holds (its ``with`` blocks have not exited), on the
    saver's home loop, before its connections close: a closed saver renews nothing, so such a
    lease is marked lost and its keys are freed now rather than at their expiry."""
    state = _STATES.get(saver)
    if state is None or state.loop is not asyncio.get_running_loop():
        return
    for lock in list(state.held):
        lease = lock.lease
        if lease is None or lease.released:
            continue
        lease._mark_lost("the saver was closed while the lease was held")
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await lock._release(None)
        except Exception:
            log.exception("thread %r: releasing the lease at close failed", lock.thread_id)


class _Held:
    """An attempt found the lease held (``pttl_ms``: its remaining time, if known)."""

    def __init__(self, pttl_ms: int | None = None, where: str = "another worker") -> None:
        self.pttl_ms = pttl_ms
        self.where = where


_RETRY = _Held(0, "a concurrent acquisition")


# ---------------------------------------------------------------------------------- ThreadLock


class ThreadLock(AbstractContextManager[Lease], AbstractAsyncContextManager[Lease]):
    """The single-writer lease of a thread, as a context manager (``saver.lock_thread(...)``).

    ``async with saver.lock_thread(tid) as lease`` in async code, ``with ...`` in sync code
    (the sync form runs the same implementation on the saver's event loop). Entering waits up
    to ``wait_s`` for the lease, then raises ``LockTimeoutError``. Leaving releases it (never
    another holder's). Nesting ``lock_thread`` for the same saver and thread in the same task is
    allowed and yields the outer lease. One ``ThreadLock`` is entered once.
    """

    def __init__(
        self, saver: ResilientSaver, thread_id: str, *, ttl_s: float, wait_s: float
    ) -> None:
        if not ttl_s > 0:
            raise ConfigurationError(f"ttl_s must be > 0 seconds, got {ttl_s!r}")
        if not wait_s >= 0:
            raise ConfigurationError(f"wait_s must be >= 0 seconds, got {wait_s!r}")
        self.saver = saver
        self.thread_id = thread_id
        self.ttl_s = float(ttl_s)
        self.wait_s = float(wait_s)
        self.lease: Lease | None = None
        """The lease, once entered."""
        self._entered = False
        self._reentrant = False
        self._in_redis = False
        self._in_store = False
        self._renewer: asyncio.Task[None] | None = None
        self._ctx: contextvars.Token[tuple[tuple[int, str, Lease], ...]] | None = None
        # Hand-off between the acquisition (on the saver's loop) and a caller that may give up
        # meanwhile (cancelled on another loop, KeyboardInterrupt in sync code): whichever of
        # the two comes second releases a lease nobody will use.
        self._handoff = threading.Lock()
        self._acquired: Lease | None = None
        self._abandoned = False

    # ---------------------------------------------------------------- context manager

    def _begin(self) -> Lease | None:
        if self._entered:
            raise RuntimeError("a ThreadLock is entered once; call saver.lock_thread() again")
        self._entered = True
        held = _held_lease(self.saver, self.thread_id)
        if held is not None:
            self._reentrant = True
            self.lease = held
        return held

    def _push_context(self, lease: Lease) -> None:
        self.lease = lease
        self._ctx = _HELD.set((*_HELD.get(), (id(self.saver), self.thread_id, lease)))

    def _pop_context(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is None:
            return
        try:
            _HELD.reset(ctx)
        except ValueError:  # left in another context (a generator closed elsewhere)
            _HELD.set(tuple(entry for entry in _HELD.get() if entry[2] is not self.lease))

    def _abandon(self) -> None:
        """The caller gave up while acquiring: release the lease if it was acquired anyway."""
        with self._handoff:
            self._abandoned = True
            lease = self._acquired
        loop = self.saver._bridge.loop
        if lease is not None and not lease.released and loop is not None and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(self._release(None), loop)

    async def __aenter__(self) -> Lease:
        held = self._begin()
        if held is not None:
            return held
        try:
            lease = await self.saver._bridge.hop(self._acquire())
        except BaseException:
            self._abandon()
            raise
        self._push_context(lease)
        return lease

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reentrant or self.lease is None:
            return
        self._pop_context()
        if self.lease.released:  # the saver was closed first and released it
            return
        # Shielded: a cancelled caller still releases (and stops renewing) the lease.
        await asyncio.shield(self.saver._bridge.hop(self._release(exc)))

    def __enter__(self) -> Lease:
        held = self._begin()
        if held is not None:
            return held
        try:
            lease = self.saver._bridge.run(self._acquire())
        except BaseException:
            self._abandon()
            raise
        self._push_context(lease)
        return lease

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reentrant or self.lease is None:
            return
        self._pop_context()
        if self.lease.released:  # the saver was closed first and released it
            return
        self.saver._bridge.run(self._release(exc))

    # ---------------------------------------------------------------- plumbing

    def _keys(self, tier: RedisTier) -> list[str]:
        # The `{thread_id}` hash tag keeps them in one Cluster slot with the Redis tier's keys;
        # the third is the tier's generation key of the thread (its dirty repair bumps it).
        base = f"{self.saver.settings.prefix}{{{self.thread_id}}}:"
        return [base + "lease", base + "epoch", tier.generation_key(self.thread_id)]

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000))

    def _redis_usable(self, state: _SaverLeases) -> bool:
        tier = self.saver._tier
        if tier is None:
            return False
        return not tier.breaker.is_open or tier.breaker.probe_due()

    async def _redis(self, script: LuaScript, args: list[Any]) -> Any:
        """One Lua call on the Redis tier's connection, under its breaker (which repairs dirty
        threads before it trusts Redis again). Raises ``_RedisDown`` when Redis is unavailable
        (or the saver has no Redis tier)."""
        from langgraph_resilient.checkpoint.redis_tier import RedisUnavailable

        tier = self.saver._tier
        if tier is None:
            raise _RedisDown("the saver has no Redis tier")
        try:
            name = f"lease_{_SCRIPT_NAMES[script.source]}"
            return await tier.run_script(name, script, lambda: self._keys(tier), args)
        except RedisUnavailable as exc:
            raise _RedisDown(str(exc)) from exc

    # ---------------------------------------------------------------- acquire

    async def _acquire(self) -> Lease:
        """Take the lease (on the saver's home loop) and start renewing it."""
        state = _state_of(self.saver)
        started = time.monotonic()
        deadline = started + self.wait_s
        if not await state.lock_local(self.thread_id, deadline - started):
            self._timeout(started, "another task of this process holds it", None)
        try:
            lease, attempts = await self._acquire_shared(state, started, deadline)
        except BaseException:
            state.unlock_local(self.thread_id)
            raise
        self.saver._leases[self.thread_id] = lease.epoch
        self.saver._lease_acquired(self.thread_id, lambda: self._in_redis)
        self.lease = lease
        state.held.add(self)
        self._renewer = asyncio.get_running_loop().create_task(
            self._renew_loop(lease, state), name=f"lease-renew:{self.thread_id}"
        )
        with self._handoff:
            self._acquired = lease
            abandoned = self._abandoned
        if abandoned:  # the caller is gone: nobody will release this lease but us
            await self._release(None)
            raise asyncio.CancelledError()
        _emit(
            "acquired",
            self.thread_id,
            lease.epoch,
            lease.backend,
            waited_s=time.monotonic() - started,
            attempts=attempts,
        )
        return lease

    def _timeout(self, started: float, why: str, cause: BaseException | None) -> NoReturn:
        _emit("timeout", self.thread_id, None, None, waited_s=time.monotonic() - started, why=why)
        raise LockTimeoutError(
            f"thread {self.thread_id!r}: could not take its lease within wait_s={self.wait_s:g}s "
            f"({why}). Another worker is running this thread: retry later, raise wait_s, or "
            "send a thread's requests to one replica"
        ) from cause

    async def _acquire_shared(
        self, state: _SaverLeases, started: float, deadline: float
    ) -> tuple[Lease, int]:
        store = self.saver.store
        attempt = 0
        last_error: BaseException | None = None
        why = "another worker holds it"
        while True:
            attempt += 1
            outcome: Lease | _Held
            try:
                if self._redis_usable(state):
                    outcome = await self._try_redis(state)
                else:
                    outcome = await self._try_store()
            except _RedisDown as exc:
                outcome, last_error = _RETRY, exc.__cause__  # the breaker picks the next path
                why = f"Redis failed: {exc}"
            except ResilientError:
                raise
            except Exception as exc:
                if not store.is_transient(exc):
                    raise TierUnavailableError(
                        store.tier,
                        f"taking the lease of thread {self.thread_id!r} failed: "
                        f"{describe_error(exc)}",
                    ) from exc
                outcome, last_error = _RETRY, exc
                why = f"the {store.tier} lease store failed: {describe_error(exc)}"
            if isinstance(outcome, Lease):
                return outcome, attempt
            if outcome is not _RETRY:
                why = f"{outcome.where} holds it"
            now = time.monotonic()
            if now >= deadline:
                self._timeout(started, why, last_error)
            delay = min(0.05, self.ttl_s / 4, 0.004 * 2 ** min(attempt, 8))
            delay *= random.uniform(0.5, 1.0)
            if outcome.pttl_ms is not None and outcome.pttl_ms > 0:
                delay = min(delay, outcome.pttl_ms / 1000 + 0.001)
            await asyncio.sleep(max(0.0, min(delay, deadline - now)))

    async def _try_redis(self, state: _SaverLeases) -> Lease | _Held:
        scripts = _LEASE_SCRIPTS
        token = _new_token()
        sent = time.monotonic()
        args = [token, self._ttl_ms, EPOCH_BAND, EPOCH_BAND, *state.orphans(self.thread_id)]
        try:
            reply = await self._redis(scripts.acquire, args)
        except _RedisDown:
            state.add_orphan(self.thread_id, token, self.ttl_s)
            raise
        if int(reply[0]) == 0:
            return _Held(int(reply[1]))
        epoch, status, gen = int(reply[1]), int(reply[2]), reply[3]
        if status != 1:
            try:
                held = await self._confirm(state, scripts, token, epoch, gen, status == 2)
            except BaseException:
                await self._release_redis_quietly(state, scripts, token)
                raise
            if held is not None:
                return held
        self._in_redis = True
        return Lease(self.thread_id, token, epoch, REDIS_BACKEND, self.ttl_s, sent + self.ttl_s)

    async def _confirm(
        self,
        state: _SaverLeases,
        scripts: _Scripts,
        token: str,
        epoch: int,
        gen: Any,
        revalidate: bool,
    ) -> _Held | None:
        """Check a fresh Redis epoch against the durable store (None: good to hand out).

        An unconfirmed band is confirmed by raising the store's epoch to the band's first
        number, which the store does only if its epoch is lower and no live store lease exists.
        A band the store already reached is skipped (the counter moves to the next odd band
        above the store's epoch): Redis may have lost a counter that had handed out epochs in it.
        A confirmed band whose generation changed (the thread was leased or written while Redis
        was unreachable) is kept if the store's epoch is still below ``epoch``.
        """
        band = _band_start(epoch)
        result = await self.saver.store.lease_raise(self.thread_id, band, token)
        if result.held:
            await self._redis(scripts.floor, [0, token])
            return _Held(None, f"a {self.saver.store.tier} lease row")
        if result.raised or (revalidate and result.epoch < epoch):
            if int(await self._redis(scripts.confirm, [token, band, gen])):
                return None
            return _RETRY  # the key vanished meanwhile (Redis restarted): start over
        floor = _redis_floor(max(result.epoch, epoch))
        await self._redis(scripts.floor, [floor, token])
        return _RETRY

    async def _try_store(self) -> Lease | _Held:
        store = self.saver.store
        token = _new_token()
        sent = time.monotonic()
        epoch = await store.lease_acquire(self.thread_id, token, self.ttl_s)
        if epoch is None:
            return _Held(None, f"another worker ({store.tier} lease row)")
        self._in_store = True
        lease = Lease(self.thread_id, token, epoch, store.tier, self.ttl_s, sent + self.ttl_s)
        if self.saver.redis is not None:
            await self._mark_dirty(lease)
            _emit(
                "failover",
                self.thread_id,
                epoch,
                store.tier,
                reason="Redis unavailable: lease taken in the durable store",
            )
        return lease

    async def _mark_dirty(self, lease: Lease) -> None:
        """Have the Redis tier's repair bump the thread's generation once Redis answers, so
        Redis acquirers check the store (and wait for this lease) instead of trusting their
        confirmed band. Best effort: a failure only delays that check."""
        try:
            await self.saver.store.mark_dirty([self.thread_id])
        except Exception as exc:
            log.warning("thread %r: could not mark the lease dirty: %r", self.thread_id, exc)

    # ---------------------------------------------------------------- renew

    async def _renew_loop(self, lease: Lease, state: _SaverLeases) -> None:
        interval = self.ttl_s / 3
        while not cancelling():
            await asyncio.sleep(interval)
            sent = time.monotonic()
            try:
                alive = await self._renew_once(lease, state)
            except Exception as exc:
                if time.monotonic() >= lease.expires_at:
                    lease._mark_lost(f"could not renew it before it expired: {exc!r}")
                    return
                log.warning("thread %r: lease renewal failed, retrying: %r", lease.thread_id, exc)
                interval = max(0.01, min(self.ttl_s / 3, lease.remaining_s / 3))
                continue
            if not alive:
                return
            lease.expires_at = sent + self.ttl_s
            interval = self.ttl_s / 3

    async def _renew_once(self, lease: Lease, state: _SaverLeases) -> bool:
        """Renew wherever the lease lives; False (and the lease marked lost) when it is gone."""
        store = self.saver.store
        if self._in_redis:
            scripts = _LEASE_SCRIPTS
            try:
                renewed = int(await self._redis(scripts.renew, [lease.token, self._ttl_ms]))
            except _RedisDown as exc:
                if not self._in_store:
                    # Redis failed mid-lease: move the lease, same epoch, to the durable store.
                    if not await store.lease_hold(
                        lease.thread_id, lease.token, lease.epoch, self.ttl_s
                    ):
                        lease._mark_lost(
                            f"Redis failed ({exc}) and the {store.tier} lease row is held by "
                            "another worker or has a newer epoch"
                        )
                        return False
                    await self._mark_dirty(lease)
                    self._in_store = True
                    lease.backend = store.tier
                    log.warning(
                        "thread %r: Redis failed (%s); lease (epoch %d) moved to %s",
                        lease.thread_id,
                        exc,
                        lease.epoch,
                        store.tier,
                    )
                    _emit(
                        "failover",
                        lease.thread_id,
                        lease.epoch,
                        store.tier,
                        reason=f"Redis failed while the lease was held: {exc}",
                    )
                    return True
            else:
                if not renewed:
                    self._in_redis = False
                    if not self._in_store:
                        lease._mark_lost("its Redis key expired or another worker took it")
                        return False
        if self._in_store:
            if not await store.lease_hold(lease.thread_id, lease.token, lease.epoch, self.ttl_s):
                lease._mark_lost(
                    f"the {store.tier} lease row was taken over (a newer epoch or another holder)"
                )
                return False
            if not self._in_redis and self._redis_usable(state):
                await self._claim_redis(lease, state)
        return True

    async def _claim_redis(self, lease: Lease, state: _SaverLeases) -> None:
        """A store-held lease sees Redis again: let Redis acquirers wait for it (best effort)."""
        scripts = _LEASE_SCRIPTS
        try:
            claimed = await self._redis(
                scripts.claim, [_redis_floor(lease.epoch), lease.token, self._ttl_ms]
            )
        except _RedisDown:
            state.add_orphan(self.thread_id, lease.token, self.ttl_s)
            return
        self._in_redis = bool(int(claimed))

    # ---------------------------------------------------------------- release

    async def _release_redis_quietly(
        self, state: _SaverLeases, scripts: _Scripts, token: str
    ) -> None:
        try:
            await self._redis(scripts.release, [token])
        except Exception as exc:
            # The key expires by itself; until then this process's next acquisition of the
            # thread takes it over instead of waiting for it.
            state.add_orphan(self.thread_id, token, self.ttl_s)
            log.debug("thread %r: lease release in Redis failed: %r", self.thread_id, exc)

    async def _release(self, exc: BaseException | None) -> None:
        """Stop renewing, release wherever the lease lives, forget its epoch (home loop)."""
        lease = self.lease
        assert lease is not None
        if lease.released:
            return
        lease.released = True
        state = _state_of(self.saver)
        state.held.discard(self)
        renewer, self._renewer = self._renewer, None
        await stop_tasks([renewer], what=f"thread {self.thread_id!r}: lease renewal", log=log)
        try:
            await self.saver._lease_releasing(
                self.thread_id, lost=lease.lost or _is_stale(exc) or not self._in_redis
            )
            if self._in_redis and _is_stale(exc) and not lease.lost:
                await self._repair_counter(lease, state)
            if self._in_redis:
                await self._release_redis_quietly(state, _LEASE_SCRIPTS, lease.token)
            if self._in_store:
                try:
                    await self.saver.store.lease_release(self.thread_id, lease.token)
                except Exception as error:
                    log.warning(
                        "thread %r: lease release in %s failed (it expires in %.1fs): %r",
                        self.thread_id,
                        self.saver.store.tier,
                        self.ttl_s,
                        error,
                    )
        finally:
            if self.saver._leases.get(self.thread_id) == lease.epoch:
                del self.saver._leases[self.thread_id]
            state.unlock_local(self.thread_id)
            _emit(
                "released",
                self.thread_id,
                lease.epoch,
                lease.backend,
                held_s=time.monotonic() - lease.acquired_at,
            )

    async def _repair_counter(self, lease: Lease, state: _SaverLeases) -> None:
        """A write under a Redis lease we still hold was refused as stale: the Redis counter is
        behind the store's epoch (a store lease was used while this Redis stayed up, and the
        tier's dirty-thread repair has not run yet). Move it above, so the next acquisition gets
        a valid epoch, and drop the thread's cached entries, which are as stale as the counter."""
        scripts = _LEASE_SCRIPTS
        try:
            if not int(await self._redis(scripts.renew, [lease.token, self._ttl_ms])):
                return  # taken over, not behind
            stored = await self.saver.store.thread_epoch(self.thread_id)
            if stored > lease.epoch:
                await self._redis(scripts.floor, [_redis_floor(stored), ""])
                tier = getattr(self.saver, "_tier", None)
                if tier is not None:
                    await tier.invalidate([self.thread_id])
                log.warning(
                    "thread %r: the Redis epoch counter (%d) was behind the %s epoch (%d); "
                    "repaired, the next lock_thread gets a valid epoch",
                    self.thread_id,
                    lease.epoch,
                    self.saver.store.tier,
                    stored,
                )
        except Exception as exc:
            log.warning("thread %r: could not repair the epoch counter: %r", self.thread_id, exc)


def _is_stale(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, StaleLeaseError):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False
