"""The circuit breaker's state machine, on its own: what ``CircuitBreaker`` runs locally, and
what its Redis backend falls back to when Redis is unreachable.

States::

    CLOSED --(window rate >= threshold, >= minimum_calls)--> OPEN
    OPEN --(open_for_s elapsed, next call)--> HALF_OPEN
    HALF_OPEN --(half_open_max_calls probes succeeded)--> CLOSED
    HALF_OPEN --(a probe failed or was slow)--> OPEN
    any --force_open()--> FORCED_OPEN --close()--> CLOSED

:class:`LocalBreaker` is the reference; ``_redis_breaker.py`` implements the same transitions as
atomic Lua scripts for the shared mode. Both report through :class:`BreakerSignals` (events,
and the ``CircuitOpenError`` of a rejected call), so neither knows the other.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, NoReturn

from langgraph_resilient.errors import CircuitOpenError
from langgraph_resilient.observability.events import EventBus, EventKind
from langgraph_resilient.runtime.clock import Clock

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
class Transition:
    """A change of state, and why."""

    old: CircuitState
    new: CircuitState
    reason: str


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """The thresholds of one breaker (validated by ``CircuitBreaker``)."""

    failure_rate_threshold: float
    slow_call_duration_s: float | None
    slow_call_rate_threshold: float
    window: WindowKind
    window_size: int
    minimum_calls: int
    open_for_s: float
    half_open_max_calls: int
    probe_ttl_s: float

    @property
    def timed(self) -> bool:
        """Whether calls must be timed (slow-call tracking is on)."""
        return self.slow_call_duration_s is not None


class BreakerSignals:
    """How a breaker's backends report: state changes and backend switches as events, and a
    rejected call as ``CircuitOpenError``."""

    __slots__ = ("events", "name")

    def __init__(self, name: str, events: EventBus) -> None:
        self.name = name
        self.events = events

    def transition(self, transition: Transition, origin: str) -> None:
        """Announce a state change (``origin``: ``"local"`` or ``"redis"``)."""
        self.events.publish(
            EventKind.BREAKER_STATE,
            self.name,
            old=transition.old,
            new=transition.new,
            reason=transition.reason,
            origin=origin,
        )

    def reject(self, node: str, state: CircuitState, retry_after: float | None) -> NoReturn:
        """Refuse a call: an event, then ``CircuitOpenError``."""
        self.events.publish(
            EventKind.BREAKER_REJECTED, self.name, node=node, state=state, retry_after_s=retry_after
        )
        raise CircuitOpenError(self.name, retry_after)

    def backend(self, backend: str, error: str | None) -> None:
        """Announce that a shared breaker now decides ``"local"``-ly or in ``"redis"``."""
        self.events.publish(EventKind.BREAKER_BACKEND, self.name, backend=backend, error=error)


class LocalBreaker:
    """The state machine in this process (thread-safe)."""

    def __init__(self, settings: BreakerSettings, clock: Clock, signals: BreakerSignals) -> None:
        self.settings = settings
        self.clock = clock
        self.signals = signals
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._open_until = 0.0
        self._half_open_successes = 0
        self._probes: dict[int, float] = {}
        self._next_probe = 0
        self._window: _CountWindow | _TimeWindow = (
            _CountWindow(settings.window_size)
            if settings.window == "count"
            else _TimeWindow(settings.window_size)
        )

    @property
    def state(self) -> CircuitState:
        """The current state (OPEN turns HALF_OPEN here once its period is over)."""
        with self._lock:
            self._maybe_half_open(self.clock.monotonic())
            return self._state

    def snapshot(self) -> dict[str, object]:
        """State and window totals (see ``CircuitBreaker.snapshot``)."""
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

    def is_slow(self, duration_s: float) -> int:
        threshold = self.settings.slow_call_duration_s
        return 1 if threshold is not None and duration_s >= threshold else 0

    def _maybe_half_open(self, now: float) -> Transition | None:
        """OPEN -> HALF_OPEN once the open period is over. Caller holds the lock."""
        if self._state is CircuitState.OPEN and now >= self._open_until:
            self._state = CircuitState.HALF_OPEN
            self._half_open_successes = 0
            self._probes.clear()
            return Transition(CircuitState.OPEN, CircuitState.HALF_OPEN, "open_period_elapsed")
        return None

    def _trip(self, now: float, old: CircuitState, reason: str) -> Transition:
        """-> OPEN. Caller holds the lock."""
        self._state = CircuitState.OPEN
        self._open_until = now + self.settings.open_for_s
        self._half_open_successes = 0
        self._probes.clear()
        self._window.reset()
        return Transition(old, CircuitState.OPEN, reason)

    def acquire(self, node: str) -> int | None:
        """Admit a call (a permit: ``None`` in CLOSED, a probe id in HALF_OPEN) or reject it."""
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
                if len(probes) < self.settings.half_open_max_calls - self._half_open_successes:
                    self._next_probe += 1
                    permit = self._next_probe
                    probes[permit] = now + self.settings.probe_ttl_s
                else:
                    permit = -1
            else:
                permit = -1
            retry_after = max(self._open_until - now, 0.0) if state is CircuitState.OPEN else None
        if transition is not None:
            self.signals.transition(transition, "local")
        if permit == -1:
            self.signals.reject(node, state, retry_after)
        return permit

    def record(self, permit: int | None, failed: int, slow: int) -> None:
        """The outcome of an admitted call (``failed``/``slow``: 0 or 1)."""
        transition = None
        with self._lock:
            now = self.clock.monotonic()
            state = self._state
            if permit is None:
                if state is not CircuitState.CLOSED:
                    return  # admitted before the breaker opened: too late to matter
                calls, fails, slows = self._window.add(failed, slow, now)
                if calls >= self.settings.minimum_calls and (
                    fails / calls >= self.settings.failure_rate_threshold
                    or (
                        self.settings.timed
                        and slows / calls >= self.settings.slow_call_rate_threshold
                    )
                ):
                    reason = (
                        "failure_rate"
                        if fails / calls >= self.settings.failure_rate_threshold
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
                    if self._half_open_successes >= self.settings.half_open_max_calls:
                        self._state = CircuitState.CLOSED
                        self._probes.clear()
                        self._window.reset()
                        transition = Transition(
                            CircuitState.HALF_OPEN, CircuitState.CLOSED, "probes_succeeded"
                        )
        if transition is not None:
            self.signals.transition(transition, "local")

    def release(self, permit: int | None) -> None:
        """Give a probe permit back without an outcome."""
        if permit is not None:
            with self._lock:
                self._probes.pop(permit, None)

    def set(self, state: CircuitState, reason: str, open_for_s: float = 0.0) -> None:
        """Move to ``state`` now (manual control), forgetting the window."""
        with self._lock:
            old = self._state
            self._state = state
            self._open_until = self.clock.monotonic() + open_for_s
            self._half_open_successes = 0
            self._probes.clear()
            self._window.reset()
        if old is not state:
            self.signals.transition(Transition(old, state, reason), "local")

    def seed(self, state: CircuitState, open_for_s: float) -> None:
        """Start local state from the last shared state seen (Redis just went away)."""
        with self._lock:
            self._state = state
            self._open_until = self.clock.monotonic() + open_for_s
            self._half_open_successes = 0
            self._probes.clear()
            self._window.reset()

    # The backend interface ``CircuitBreaker`` drives (``RedisBreakerBackend`` has the same):
    # permits are opaque to the breaker.

    async def aacquire(self, node: str) -> int | None:
        """:meth:`acquire` (no I/O: nothing to wait for)."""
        return self.acquire(node)

    async def arecord(self, permit: int | None, failed: int, slow: int) -> None:
        """:meth:`record`."""
        self.record(permit, failed, slow)

    async def arelease(self, permit: int | None) -> None:
        """:meth:`release`."""
        self.release(permit)

    def release_nowait(self, permit: int | None) -> None:
        """:meth:`release` (it never waits)."""
        self.release(permit)

    def force(self, target: CircuitState, open_for_s: float) -> None:
        """Manual control (``force_open``, ``open``, ``close``)."""
        self.set(target, "manual", open_for_s)

    def read_state(self) -> CircuitState | None:
        """The current state."""
        return self.state
