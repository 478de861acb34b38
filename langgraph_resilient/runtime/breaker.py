"""``CircuitBreaker``: sliding-window failure/slow-call rates, bounded half-open probes, manual
control, and optional state shared by all replicas through Redis.

The state machine is in ``breaker_state.py`` (:class:`LocalBreaker`); with ``redis_url`` the
same transitions run as atomic Lua scripts (``_redis_breaker.py``), falling back to the local
machine while Redis is unreachable. The breaker drives whichever backend it has through one
interface.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langgraph_resilient.errors import ConfigurationError
from langgraph_resilient.observability.events import EventBus
from langgraph_resilient.runtime._redis_breaker import RedisBreakerBackend
from langgraph_resilient.runtime.breaker_state import (
    BreakerSettings,
    BreakerSignals,
    CircuitState,
    LocalBreaker,
    WindowKind,
)
from langgraph_resilient.runtime.clock import SYSTEM_CLOCK, Clock

__all__ = ["CircuitBreaker", "CircuitState"]


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
        settings = BreakerSettings(
            failure_rate_threshold=failure_rate_threshold,
            slow_call_duration_s=slow_call_duration_s,
            slow_call_rate_threshold=slow_call_rate_threshold,
            window=window,
            window_size=window_size,
            minimum_calls=minimum_calls,
            open_for_s=open_for_s,
            half_open_max_calls=half_open_max_calls,
            probe_ttl_s=probe_ttl_s,
        )
        signals = BreakerSignals(name, self.events)
        self._local = LocalBreaker(settings, self.clock, signals)
        self._backend: LocalBreaker | RedisBreakerBackend = self._local
        if redis_url is not None or redis is not None or aredis is not None:
            self._backend = RedisBreakerBackend(
                name,
                settings,
                self._local,
                url=redis_url,
                client=redis,
                aclient=aredis,
                prefix=redis_prefix,
                timeout_s=redis_timeout_s,
                retry_s=redis_retry_s,
                key_ttl_s=key_ttl_s,
            )

    def __repr__(self) -> str:
        mode = "shared" if self.shared else "local"
        return f"CircuitBreaker({self.name!r}, {mode}, state={self._local.state.value})"

    @property
    def shared(self) -> bool:
        """True when the state lives in Redis (see ``redis_url``)."""
        return self._backend is not self._local

    # ------------------------------------------------------------------ public control

    @property
    def state(self) -> CircuitState:
        """The current state (asks Redis in shared mode; local state if Redis is down)."""
        state = self._backend.read_state()
        return state if state is not None else self._local.state

    def force_open(self) -> None:
        """Reject every call until :meth:`close` (an operator's kill switch)."""
        self._backend.force(CircuitState.FORCED_OPEN, 0.0)

    def open(self, for_s: float | None = None) -> None:
        """Open now, as if tripped, for ``for_s`` seconds (default ``open_for_s``)."""
        self._backend.force(CircuitState.OPEN, self.open_for_s if for_s is None else for_s)

    def close(self) -> None:
        """Close now and forget the window (also ends ``force_open``)."""
        self._backend.force(CircuitState.CLOSED, 0.0)

    def snapshot(self) -> dict[str, Any]:
        """Local state and window totals: ``state``, ``calls``, ``failures``, ``slow_calls``,
        ``failure_rate``, ``slow_call_rate``, ``probes_in_flight``."""
        return self._local.snapshot()

    # ------------------------------------------------------------------ call protocol

    def acquire(self, node: str = "") -> Any:
        """Admit a call or raise ``CircuitOpenError``. Returns a permit for the outcome calls."""
        return self._backend.acquire(node)

    def on_success(self, permit: Any, duration_s: float) -> None:
        """Report that an admitted call succeeded after ``duration_s`` seconds."""
        self._backend.record(permit, 0, self._local.is_slow(duration_s))

    def on_failure(self, permit: Any, exc: BaseException, duration_s: float) -> None:
        """Report that an admitted call failed with ``exc`` after ``duration_s`` seconds."""
        if self.failure_on is not None and not self.failure_on(exc):
            self.release(permit)
            return
        self._backend.record(permit, 1, self._local.is_slow(duration_s))

    def release(self, permit: Any) -> None:
        """Give a permit back without an outcome (interrupted or cancelled call)."""
        self._backend.release(permit)

    async def aacquire(self, node: str = "") -> Any:
        """Async :meth:`acquire` (only shared mode does I/O)."""
        return await self._backend.aacquire(node)

    async def aon_success(self, permit: Any, duration_s: float) -> None:
        """Async :meth:`on_success`."""
        await self._backend.arecord(permit, 0, self._local.is_slow(duration_s))

    async def aon_failure(self, permit: Any, exc: BaseException, duration_s: float) -> None:
        """Async :meth:`on_failure`."""
        if self.failure_on is not None and not self.failure_on(exc):
            await self.arelease(permit)
            return
        await self._backend.arecord(permit, 1, self._local.is_slow(duration_s))

    async def arelease(self, permit: Any) -> None:
        """Async :meth:`release`."""
        await self._backend.arelease(permit)

    def release_nowait(self, permit: Any) -> None:
        """Release a permit without waiting (for a caller that is being cancelled)."""
        self._backend.release_nowait(permit)
