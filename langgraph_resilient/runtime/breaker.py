"""``CircuitBreaker``: sliding-window failure/slow-call rates, bounded half-open probes, manual
control, and optional state shared by all replicas through Redis.

States::

    CLOSED --(window rate >= threshold, >= minimum_calls)--> OPEN
    OPEN --(open_for_s elapsed, next call)--> HALF_OPEN
    HALF_OPEN --(half_open_max_calls probes succeeded)--> CLOSED
    HALF_OPEN --(a probe failed or was slow)--> OPEN
    any --force_open()--> FORCED_OPEN --close()--> CLOSED

The local state machine below is the reference; ``_redis_breaker.py`` implements the same
transitions as atomic Lua scripts for the shared mode.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from langgraph_resilient.errors import CircuitOpenError, ConfigurationError
from langgraph_resilient.observability.events import EventBus, EventKind
from langgraph_resilient.runtime.clock import SYSTEM_CLOCK, Clock

__all__ = ["CircuitBreaker", "CircuitState"]

WindowKind = Literal["count", "time"]

#: A permit for a call admitted in CLOSED state (local backend).
_CLOSED_PERMIT: None = None


class CircuitState(StrEnum):
    """A breaker's state. ``FORCED_OPEN`` comes from ``force_open()``; only ``close()`` ends it."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"


class _CountWindow:
    """The last ``size`` call outcomes, with running totals."""

    __slots__ = ("codes", "fails", "n", "pos", "size", "slow")

    def __init__(self, size: int) -> None:
        self.size = size
        self.codes = bytearray(size)
        self.n = self.pos = self.fails = self.slow = 0

    def add(self, failed: int, slow: int, now: float) -> tuple[int, int, int]:
        pos = self.pos
        if self.n == self.size:
            old = self.codes[pos]
            self.fails -= old & 1
            self.slow -= old >> 1
        else:
            self.n += 1
        self.codes[pos] = failed | (slow << 1)
        self.pos = pos + 1 if pos + 1 < self.size else 0
        self.fails += failed
        self.slow += slow
        return self.n, self.fails, self.slow

    def totals(self, now: float) -> tuple[int, int, int]:
        return self.n, self.fails, self.slow

    def reset(self) -> None:
        self.n = self.pos = self.fails = self.slow = 0


class _TimeWindow:
    """Call outcomes of the last ``size`` seconds, in one-second buckets."""

    __slots__ = ("buckets", "calls", "fails", "last", "size", "slow")

    def __init__(self, size: int) -> None:
        self.size = size
        self.buckets = [[0, 0, 0] for _ in range(size)]  # calls, fails, slow
        self.calls = self.fails = self.slow = 0
        self.last: int | None = None

    def _advance(self, sec: int) -> None:
        last = self.last
        if last is not None and sec <= last:
            return
        first = sec - self.size + 1 if last is None else max(last + 1, sec - self.size + 1)
        for s in range(first, sec + 1):
            bucket = self.buckets[s % self.size]
            self.calls -= bucket[0]
            self.fails -= bucket[1]
            self.slow -= bucket[2]
            bucket[0] = bucket[1] = bucket[2] = 0
        self.last = sec

    def add(self, failed: int, slow: int, now: float) -> tuple[int, int, int]:
        sec = int(now)
        self._advance(sec)
        bucket = self.buckets[(self.last if self.last is not None else sec) % self.size]
        bucket[0] += 1
        bucket[1] += failed
        bucket[2] += slow
        self.calls += 1
        self.fails += failed
        self.slow += slow
        return self.calls, self.fails, self.slow

    def totals(self, now: float) -> tuple[int, int, int]:
        self._advance(int(now))
        return self.calls, self.fails, self.slow

    def reset(self) -> None:
        for bucket in self.buckets:
            bucket[0] = bucket[1] = bucket[2] = 0
        self.calls = self.fails = self.slow = 0


@dataclass(frozen=True, slots=True)
class _Transition:
    old: CircuitState
    new: CircuitState
    reason: str


class CircuitBreaker:
    """Stop calling a failing dependency for a while; let a few probes test its recovery.

    Args:
        name: identifies the breaker in events and, in shared mode, in Redis: replicas using
            the same name (and ``redis_prefix``) share one state.
        failure_rate_threshold: open when the window's failed-call share reaches this (0-1].
        slow_call_duration_s: calls lasting at least this long are "slow" (None: no slow-call
            tracking).
        slow_call_rate_threshold: open when the window's slow-call share reaches this (0-1].
        window: ``"count"`` (the last ``window_size`` calls) or ``"time"`` (calls of the last
            ``window_size`` seconds, in one-second buckets).
        window_size: calls (count window) or seconds (time window).
        minimum_calls: the window must hold at least this many calls before the rates count.
        open_for_s: how long the breaker rejects calls after opening, before half-open probes.
        half_open_max_calls: probes allowed at once in HALF_OPEN, and the number of successful
            probes that close the breaker. A failed (or slow) probe reopens it.
        probe_ttl_s: a probe that has not reported back after this long is presumed dead (its
            caller crashed or was cancelled) and frees its slot.
        failure_on: which errors count as failures (default: all). Errors it rejects are
            ignored (neither success nor failure). ``GraphBubbleUp`` (interrupts, commands) and
            cancellation are never counted.
        redis_url: share the state with every replica through this Redis (plain Redis/Valkey,
            atomic Lua scripts). Or pass ready clients as ``redis`` (sync) / ``aredis``
            (``redis.asyncio``). If Redis fails, the breaker continues on local state, seeded
            from the last shared state it saw, and tries Redis again after ``redis_retry_s``.
        redis_prefix: key prefix; keys are ``{prefix}breaker:{<name>}:state|window|probes``.
        redis_timeout_s: socket timeout of the clients built from ``redis_url``.
        key_ttl_s: shared keys expire after this long without use.
        clock: time source for local state (``ManualClock`` in tests). Shared state uses the
            Redis server's clock so that replicas agree.
        events: event bus (default ``EventBus.default()``).

    Rejected calls raise ``CircuitOpenError`` with ``retry_after_s`` when it is known.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_rate_threshold: float = 0.5,
        slow_call_duration_s: float | None = None,
        slow_call_rate_threshold: float = 1.0,
        window: WindowKind = "count",
        window_size: int = 100,
        minimum_calls: int = 10,
        open_for_s: float = 30.0,
        half_open_max_calls: int = 1,
        probe_ttl_s: float = 60.0,
        failure_on: Callable[[BaseException], bool] | None = None,
        redis_url: str | None = None,
        redis: Any = None,
        aredis: Any = None,
        redis_prefix: str = "langgraph_resilient:",
        redis_timeout_s: float = 0.5,
        redis_retry_s: float = 5.0,
        key_ttl_s: float = 86_400.0,
        clock: Clock | None = None,
        events: EventBus | None = None,
    ) -> None:
        if not name:
            raise ConfigurationError("CircuitBreaker needs a non-empty name")
        if not 0 < failure_rate_threshold <= 1:
            raise ConfigurationError("failure_rate_threshold must be in (0, 1]")
        if not 0 < slow_call_rate_threshold <= 1:
            raise ConfigurationError("slow_call_rate_threshold must be in (0, 1]")
        if window not in ("count", "time"):
            raise ConfigurationError("window must be 'count' or 'time'")
        if window_size < 1 or minimum_calls < 1:
            raise ConfigurationError("window_size and minimum_calls must be at least 1")
        if window == "count" and minimum_calls > window_size:
            raise ConfigurationError(
                f"minimum_calls={minimum_calls} can never be reached by a count window of "
                f"{window_size} calls; lower minimum_calls or raise window_size"
            )
        if open_for_s < 0 or probe_ttl_s <= 0 or half_open_max_calls < 1:
            raise ConfigurationError(
                "open_for_s must be >= 0, probe_ttl_s > 0 and half_open_max_calls >= 1"
            )
        self.name = name
        self.failure_rate_threshold = failure_rate_threshold
        self.slow_call_duration_s = slow_call_duration_s
        self.slow_call_rate_threshold = slow_call_rate_threshold
        self.window: WindowKind = window
        self.window_size = window_size
        self.minimum_calls = minimum_calls
        self.open_for_s = open_for_s
        self.half_open_max_calls = half_open_max_calls
        self.probe_ttl_s = probe_ttl_s
        self.failure_on = failure_on
        self.clock: Clock = clock or SYSTEM_CLOCK
        self.events = events or EventBus.default()
        #: Whether calls must be timed (slow-call tracking is on).
        self.timed = slow_call_duration_s is not None

        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._open_until = 0.0
        self._half_open_successes = 0
        self._probes: dict[int, float] = {}
        self._next_probe = 0
        self._window: _CountWindow | _TimeWindow = (
            _CountWindow(window_size) if window == "count" else _TimeWindow(window_size)
        )

        self._shared: Any = None
        if redis_url is not None or redis is not None or aredis is not None:
            from langgraph_resilient.runtime._redis_breaker import RedisBreakerBackend

            self._shared = RedisBreakerBackend(
                self,
                url=redis_url,
                client=redis,
                aclient=aredis,
                prefix=redis_prefix,
                timeout_s=redis_timeout_s,
                retry_s=redis_retry_s,
                key_ttl_s=key_ttl_s,
            )

    def __repr__(self) -> str:
        mode = "shared" if self._shared is not None else "local"
        return f"CircuitBreaker({self.name!r}, {mode}, state={self._state.value})"

    @property
    def shared(self) -> bool:
        """True when the state lives in Redis (see ``redis_url``)."""
        return self._shared is not None

    # ------------------------------------------------------------------ public control

    @property
    def state(self) -> CircuitState:
        """The current state (asks Redis in shared mode; local state if Redis is down)."""
        if self._shared is not None:
            shared_state = self._shared.read_state()
            if shared_state is not None:
                return shared_state  # type: ignore[no-any-return]
        with self._lock:
            self._maybe_half_open(self.clock.monotonic())
            return self._state

    def force_open(self) -> None:
        """Reject every call until :meth:`close` (an operator's kill switch)."""
        if self._shared is not None:
            self._shared.force("forced_open", 0.0)
        self._set_local(CircuitState.FORCED_OPEN, "manual")

    def open(self, for_s: float | None = None) -> None:
        """Open now, as if tripped, for ``for_s`` seconds (default ``open_for_s``)."""
        duration = self.open_for_s if for_s is None else for_s
        if self._shared is not None:
            self._shared.force("open", duration)
        self._set_local(CircuitState.OPEN, "manual", duration)

    def close(self) -> None:
        """Close now and forget the window (also ends ``force_open``)."""
        if self._shared is not None:
            self._shared.force("closed", 0.0)
        self._set_local(CircuitState.CLOSED, "manual")

    def snapshot(self) -> dict[str, Any]:
        """Local state and window totals: ``state``, ``calls``, ``failures``, ``slow_calls``,
        ``failure_rate``, ``slow_call_rate``, ``probes_in_flight``."""
        with self._lock:
            now = self.clock.monotonic()
            self._maybe_half_open(now)
            calls, fails, slow = self._window.totals(now)
            return {
                "state": self._state,
                "calls": calls,
                "failures": fails,
                "slow_calls": slow,
                "failure_rate": fails / calls if calls else 0.0,
                "slow_call_rate": slow / calls if calls else 0.0,
                "probes_in_flight": len(self._probes),
            }

    # ------------------------------------------------------------------ call protocol

    def acquire(self, node: str = "") -> Any:
        """Admit a call or raise ``CircuitOpenError``. Returns a permit for the outcome calls."""
        if self._shared is not None:
            return self._shared.acquire(node)
        return self._local_acquire(node)

    def on_success(self, permit: Any, duration_s: float) -> None:
        """Report that an admitted call succeeded after ``duration_s`` seconds."""
        if self._shared is not None:
            self._shared.record(permit, 0, self._is_slow(duration_s))
        else:
            self._local_record(permit, 0, self._is_slow(duration_s))

    def on_failure(self, permit: Any, exc: BaseException, duration_s: float) -> None:
        """Report that an admitted call failed with ``exc`` after ``duration_s`` seconds."""
        if self.failure_on is not None and not self.failure_on(exc):
            self.release(permit)
            return
        if self._shared is not None:
            self._shared.record(permit, 1, self._is_slow(duration_s))
        else:
            self._local_record(permit, 1, self._is_slow(duration_s))

    def release(self, permit: Any) -> None:
        """Give a permit back without an outcome (interrupted or cancelled call)."""
        if self._shared is not None:
            self._shared.release(permit)
        else:
            self._local_release(permit)

    async def aacquire(self, node: str = "") -> Any:
        """Async :meth:`acquire` (only shared mode does I/O)."""
        if self._shared is not None:
            return await self._shared.aacquire(node)
        return self._local_acquire(node)

    async def aon_success(self, permit: Any, duration_s: float) -> None:
        """Async :meth:`on_success`."""
        if self._shared is not None:
            await self._shared.arecord(permit, 0, self._is_slow(duration_s))
        else:
            self._local_record(permit, 0, self._is_slow(duration_s))

    async def aon_failure(self, permit: Any, exc: BaseException, duration_s: float) -> None:
        """Async :meth:`on_failure`."""
        if self.failure_on is not None and not self.failure_on(exc):
            await self.arelease(permit)
            return
        if self._shared is not None:
            await self._shared.arecord(permit, 1, self._is_slow(duration_s))
        else:
            self._local_record(permit, 1, self._is_slow(duration_s))

    async def arelease(self, permit: Any) -> None:
        """Async :meth:`release`."""
        if self._shared is not None:
            await self._shared.arelease(permit)
        else:
            self._local_release(permit)

    def release_nowait(self, permit: Any) -> None:
        """Release a permit without waiting (for a caller that is being cancelled)."""
        if self._shared is not None:
            self._shared.release_nowait(permit)
        else:
            self._local_release(permit)

    # ------------------------------------------------------------------ local state machine

    def _is_slow(self, duration_s: float) -> int:
        threshold = self.slow_call_duration_s
        return 1 if threshold is not None and duration_s >= threshold else 0

    def _maybe_half_open(self, now: float) -> _Transition | None:
        """OPEN -> HALF_OPEN once the open period is over. Caller holds the lock."""
        if self._state is CircuitState.OPEN and now >= self._open_until:
            self._state = CircuitState.HALF_OPEN
            self._half_open_successes = 0
            self._probes.clear()
            return _Transition(CircuitState.OPEN, CircuitState.HALF_OPEN, "open_period_elapsed")
        return None

    def _trip(self, now: float, old: CircuitState, reason: str) -> _Transition:
        """-> OPEN. Caller holds the lock."""
        self._state = CircuitState.OPEN
        self._open_until = now + self.open_for_s
        self._half_open_successes = 0
        self._probes.clear()
        self._window.reset()
        return _Transition(old, CircuitState.OPEN, reason)

    def _local_acquire(self, node: str) -> int | None:
        state = self._state
        if state is CircuitState.CLOSED:
            return _CLOSED_PERMIT
        transition = None
        with self._lock:
            now = self.clock.monotonic()
            state = self._state
            if state is CircuitState.OPEN:
                transition = self._maybe_half_open(now)
                state = self._state
            if state is CircuitState.CLOSED:
                permit: int | None = _CLOSED_PERMIT
            elif state is CircuitState.HALF_OPEN:
                probes = self._probes
                if probes:
                    for pid in [p for p, expiry in probes.items() if expiry <= now]:
                        del probes[pid]
                if len(probes) < self.half_open_max_calls - self._half_open_successes:
                    self._next_probe += 1
                    permit = self._next_probe
                    probes[permit] = now + self.probe_ttl_s
                else:
                    permit = -1
            else:
                permit = -1
            retry_after = max(self._open_until - now, 0.0) if state is CircuitState.OPEN else None
        if transition is not None:
            self._emit(transition, "local")
        if permit == -1:
            self._reject(node, state, retry_after)
        return permit

    def _reject(self, node: str, state: CircuitState, retry_after: float | None) -> None:
        self.events.publish(
            EventKind.BREAKER_REJECTED,
            self.name,
            node=node,
            state=state,
            retry_after_s=retry_after,
        )
        raise CircuitOpenError(self.name, retry_after)

    def _local_record(self, permit: int | None, failed: int, slow: int) -> None:
        transition = None
        with self._lock:
            now = self.clock.monotonic()
            state = self._state
            if permit is None:
                if state is not CircuitState.CLOSED:
                    return  # admitted before the breaker opened: too late to matter
                calls, fails, slows = self._window.add(failed, slow, now)
                if calls >= self.minimum_calls and (
                    fails / calls >= self.failure_rate_threshold
                    or (self.timed and slows / calls >= self.slow_call_rate_threshold)
                ):
                    reason = (
                        "failure_rate"
                        if fails / calls >= self.failure_rate_threshold
                        else "slow_call_rate"
                    )
                    transition = self._trip(now, CircuitState.CLOSED, reason)
            else:
                if state is not CircuitState.HALF_OPEN or self._probes.pop(permit, None) is None:
                    return  # an expired probe, or the half-open phase is over
                if failed or slow:
                    transition = self._trip(
                        now, CircuitState.HALF_OPEN, "probe_failed" if failed else "probe_slow"
                    )
                else:
                    self._half_open_successes += 1
                    if self._half_open_successes >= self.half_open_max_calls:
                        self._state = CircuitState.CLOSED
                        self._probes.clear()
                        self._window.reset()
                        transition = _Transition(
                            CircuitState.HALF_OPEN, CircuitState.CLOSED, "probes_succeeded"
                        )
        if transition is not None:
            self._emit(transition, "local")

    def _local_release(self, permit: int | None) -> None:
        if permit is not None:
            with self._lock:
                self._probes.pop(permit, None)

    def _set_local(self, state: CircuitState, reason: str, open_for_s: float = 0.0) -> None:
        with self._lock:
            old = self._state
            self._state = state
            self._open_until = self.clock.monotonic() + open_for_s
            self._half_open_successes = 0
            self._probes.clear()
            self._window.reset()
        if old is not state:
            self._emit(_Transition(old, state, reason), "local")

    def _seed_local(self, state: CircuitState, open_for_s: float) -> None:
        """Start local state from the last shared state seen (Redis just went away)."""
        with self._lock:
            self._state = state
            self._open_until = self.clock.monotonic() + open_for_s
            self._half_open_successes = 0
            self._probes.clear()
            self._window.reset()

    def _emit(self, transition: _Transition, origin: str) -> None:
        self.events.publish(
            EventKind.BREAKER_STATE,
            self.name,
            old=transition.old,
            new=transition.new,
            reason=transition.reason,
            origin=origin,
        )
