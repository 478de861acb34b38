"""A tiny synchronous event bus: everything the resilience runtime does, for metrics to count.

The node middleware, the circuit breakers, the degradation manager, the health checker and
the thread leases publish :class:`ResilienceEvent` objects on an :class:`EventBus` (the
process-wide ``EventBus.default()`` unless one is passed in). A metrics or tracing layer
subscribes once::

    from langgraph_resilient import EventBus, EventKind

    def on_event(event):
        if event.kind is EventKind.BREAKER_STATE:
            print(event.source, event.detail["old"], "->", event.detail["new"])

    unsubscribe = EventBus.default().subscribe(on_event)

Subscribers run inline, on whatever thread or event loop produced the event, so they must be
quick and must not block (push to a queue if you need to do I/O). An exception raised by a
subscriber is logged and swallowed: observability never breaks a graph run. When nobody is
subscribed, producers skip building events altogether (they check :attr:`EventBus.active`),
so an idle bus costs one attribute read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["EventBus", "EventKind", "ResilienceEvent"]

logger = logging.getLogger(__name__)


class EventKind(StrEnum):
    """What a :class:`ResilienceEvent` reports. ``source`` and ``detail`` keys per kind:

    - ``CALL``: a guarded node or function call finished. source = node/function name;
      detail: ``outcome`` ("success", "error", "fallback", "rejected"), ``duration_s``,
      ``attempts``, ``error`` (type name or None). Published only while someone subscribes.
    - ``RETRY``: an attempt failed and will be retried. detail: ``attempt`` (the failed one,
      1-based), ``delay_s``, ``error``.
    - ``RETRY_GIVE_UP``: an attempt failed and will not be retried. detail: ``attempt``,
      ``reason`` ("not_retryable", "max_attempts", "deadline", "hint_too_long", "budget"),
      ``error``.
    - ``RETRY_BUDGET_EXHAUSTED``: a retry was refused by the retry budget. source = budget
      name; detail: ``node``, ``error``.
    - ``BREAKER_STATE``: a breaker changed state. source = breaker name; detail: ``old``,
      ``new`` (``CircuitState`` values), ``reason``, ``origin`` ("local" or "redis").
    - ``BREAKER_REJECTED``: a breaker rejected a call. source = breaker name; detail:
      ``node``, ``state``, ``retry_after_s``.
    - ``BREAKER_BACKEND``: a shared breaker switched between Redis and local state.
      source = breaker name; detail: ``backend`` ("redis" or "local"), ``error``.
    - ``TIMEOUT``: an attempt exceeded its ``Timeout``. detail: ``timeout_s``, ``attempt``,
      ``thread_abandoned`` (True when a sync node's thread was left running).
    - ``BULKHEAD_REJECTED``: a bulkhead was full. detail: ``max_concurrent``, ``max_queued``,
      ``reason`` ("queue_full" or "wait_timeout").
    - ``FALLBACK``: a fallback produced the result. detail: ``error``.
    - ``FEATURE_DISABLED``: a call was skipped because its feature is off. detail: ``feature``,
      ``fallback`` (bool).
    - ``DEGRADATION_LEVEL``: the service level changed. source = "degradation"; detail:
      ``old``, ``new`` (``ServiceLevel``), ``reason``, ``manager`` (the ``DegradationManager``).
    - ``FEATURE_TOGGLED``: a feature was switched on or off. source = feature name; detail:
      ``enabled``, ``reason``, ``manager``.
    - ``HEALTH_CHECK``: a health check changed between healthy and unhealthy (after
      hysteresis). source = check name; detail: ``healthy``, ``error``.

    Thread leases (``saver.lock_thread``); source = thread id, detail always has ``epoch`` and
    ``backend`` (``"redis"``, ``"postgres"`` or ``"sqlite"``; ``None`` before one is held):

    - ``LEASE_ACQUIRED``: detail ``waited_s``, ``attempts`` (> 1: the lease was contended).
    - ``LEASE_RELEASED``: detail ``held_s``.
    - ``LEASE_LOST``: the holder learned its lease expired or was taken over (it stalled past
      ``ttl_s``); detail ``reason``. Alert on these: each is a worker whose later writes are
      refused.
    - ``LEASE_FAILOVER``: the lease moved from Redis to the durable store (Redis failed while
      it was held), or was taken there because Redis was down; detail ``reason``.
    - ``LEASE_TIMEOUT``: ``lock_thread`` gave up after ``wait_s`` (``LockTimeoutError``);
      detail ``waited_s``, ``why``.
    """

    CALL = "call"
    RETRY = "retry"
    RETRY_GIVE_UP = "retry_give_up"
    RETRY_BUDGET_EXHAUSTED = "retry_budget_exhausted"
    BREAKER_STATE = "breaker_state"
    BREAKER_REJECTED = "breaker_rejected"
    BREAKER_BACKEND = "breaker_backend"
    TIMEOUT = "timeout"
    BULKHEAD_REJECTED = "bulkhead_rejected"
    FALLBACK = "fallback"
    FEATURE_DISABLED = "feature_disabled"
    DEGRADATION_LEVEL = "degradation_level"
    FEATURE_TOGGLED = "feature_toggled"
    HEALTH_CHECK = "health_check"
    LEASE_ACQUIRED = "lease_acquired"
    LEASE_RELEASED = "lease_released"
    LEASE_LOST = "lease_lost"
    LEASE_FAILOVER = "lease_failover"
    LEASE_TIMEOUT = "lease_timeout"


@dataclass(frozen=True, slots=True)
class ResilienceEvent:
    """One thing that happened. See :class:`EventKind` for ``source`` and ``detail`` per kind.

    ``at`` is wall-clock time (``time.time()``) when the event was built.
    """

    kind: EventKind
    source: str
    detail: Mapping[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)


Subscriber = Callable[[ResilienceEvent], None]


class EventBus:
    """Fan-out of :class:`ResilienceEvent` to subscribers; thread-safe, synchronous.

    Use ``EventBus.default()`` (what every policy publishes to unless given ``events=``) or
    make your own bus to isolate, e.g., one test or one tenant.
    """

    __slots__ = ("_lock", "_subscribers", "active")

    _default: EventBus | None = None

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: tuple[Subscriber, ...] = ()
        #: True while at least one subscriber is registered; producers check it first.
        self.active = False

    @staticmethod
    def default() -> EventBus:
        """The process-wide bus that policies publish to when not given ``events=``."""
        bus = EventBus._default
        if bus is None:
            bus = EventBus._default = EventBus()
        return bus

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber(event)`` for every event from now on; returns an unsubscribe."""
        with self._lock:
            self._subscribers = (*self._subscribers, subscriber)
            self.active = True

        def unsubscribe() -> None:
            with self._lock:
                subs = list(self._subscribers)
                if subscriber in subs:
                    subs.remove(subscriber)
                self._subscribers = tuple(subs)
                self.active = bool(subs)

        return unsubscribe

    def emit(self, event: ResilienceEvent) -> None:
        """Deliver ``event`` to every subscriber; a failing subscriber is logged, not raised."""
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:
                logger.exception("resilience event subscriber %r failed", subscriber)

    def publish(self, kind: EventKind, source: str, **detail: Any) -> None:
        """Build and emit an event, but only if someone listens (cheap when idle)."""
        if self.active:
            self.emit(ResilienceEvent(kind, source, detail))
