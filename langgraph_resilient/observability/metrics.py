"""Prometheus metrics and OpenTelemetry spans for the saver and the node middleware.

Saver metrics are recorded always (a counter increment or histogram observation costs about a
microsecond) in prometheus-client's default registry; expose them with
``prometheus_client.start_http_server(port)`` or your framework's ``/metrics`` handler. Node
middleware metrics come from the :class:`EventBus`: call :func:`install_node_metrics` once.
Spans use OpenTelemetry's API: without an SDK configured they are no-ops.

Every metric name starts with ``langgraph_``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from opentelemetry import trace
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from langgraph_resilient.observability.events import EventBus, EventKind, ResilienceEvent

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)

tracer = trace.get_tracer("langgraph_resilient")

CHECKPOINT_OP_SECONDS = Histogram(
    "langgraph_checkpoint_op_seconds",
    "Latency of a saver operation against one tier, by outcome (ok or error).",
    ["op", "tier", "outcome"],
    buckets=_LATENCY_BUCKETS,
)
CHECKPOINT_CACHE_READS = Counter(
    "langgraph_checkpoint_cache_reads_total",
    "Checkpoint reads served by the cache tiers (hit) or sent to the durable tier (miss).",
    ["result"],
)
CHECKPOINT_REDIS_AVAILABLE = Gauge(
    "langgraph_checkpoint_redis_available",
    "1 while the saver uses Redis, 0 while its breaker has it working without Redis.",
)
CHECKPOINT_REDIS_FAILURES = Counter(
    "langgraph_checkpoint_redis_failures_total",
    "Redis calls of the saver that failed or timed out (each counts toward its breaker).",
)
CHECKPOINT_DIRTY_THREADS = Counter(
    "langgraph_checkpoint_dirty_threads_total",
    "Threads written while Redis was unreachable (their cache entries get repaired).",
)
CHECKPOINT_BATCH_SIZE = Histogram(
    "langgraph_checkpoint_group_commit_batch_size",
    "Writes (puts and put_writes) committed together by one group-commit flush.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
LEASE_ACQUISITIONS = Counter(
    "langgraph_lease_acquisitions_total",
    "Thread leases taken, by whether the taker had to wait for another holder (contended).",
    ["contended"],
)
LEASE_WAIT_SECONDS = Histogram(
    "langgraph_lease_wait_seconds",
    "Time lock_thread waited before it held the lease (or gave up).",
    buckets=_LATENCY_BUCKETS,
)
LEASE_LOST = Counter(
    "langgraph_lease_lost_total",
    "Leases their holder learned it had lost (it stalled past ttl_s, or another worker took "
    "over): each is a worker whose later writes are refused.",
)
LEASE_FAILOVERS = Counter(
    "langgraph_lease_failovers_total",
    "Leases moved to (or taken in) the durable store because Redis was unavailable.",
)
LEASE_TIMEOUTS = Counter(
    "langgraph_lease_timeouts_total",
    "lock_thread calls that gave up after wait_s (LockTimeoutError).",
)


class timed_op:  # lower case: used like a function, `with timed_op(op, tier):`
    """Time one operation against one tier: a histogram observation, and a span when an
    OpenTelemetry SDK is configured.

    A class rather than a generator context manager, and no span without an SDK: it runs two or
    three times per saver operation, and that cut its cost from about 9 µs to about 1.5 µs.
    """

    __slots__ = ("_op", "_span", "_started", "_tier")

    def __init__(self, op: str, tier: str) -> None:
        self._op = op
        self._tier = tier
        self._span: Any = None
        self._started = 0.0

    def __enter__(self) -> None:
        # The same test OpenTelemetry's proxy tracer makes: spans are recorded only once a
        # tracer provider has been set.
        if getattr(trace, "_TRACER_PROVIDER", True) is not None:
            self._span = tracer.start_as_current_span(
                f"checkpoint.{self._op}", attributes={"tier": self._tier}
            )
            self._span.__enter__()
        self._started = time.perf_counter()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        elapsed = time.perf_counter() - self._started
        key = (self._op, self._tier, "ok" if exc_type is None else "error")
        child = _OP_SECONDS.get(key)
        if child is None:
            child = _OP_SECONDS[key] = CHECKPOINT_OP_SECONDS.labels(*key)
        child.observe(elapsed)
        if self._span is not None:
            self._span.__exit__(exc_type, exc, tb)


_OP_SECONDS: dict[tuple[str, str, str], Any] = {}
"""Histogram children by labels: ``labels()`` takes a lock and builds a key on every call."""


def install_node_metrics(
    bus: EventBus | None = None, registry: CollectorRegistry | None = None
) -> Callable[[], None]:
    """Count node middleware events as Prometheus metrics; returns an uninstall function.

    Metrics: ``langgraph_node_calls_total{node,outcome}``, ``langgraph_node_call_seconds``,
    ``langgraph_node_retries_total{node}``, ``langgraph_node_timeouts_total{node}``,
    ``langgraph_node_rejections_total{node,reason}``, ``langgraph_breaker_state{breaker}``
    (0 closed, 1 half-open, 2 open or forced open), ``langgraph_degradation_level`` (the
    ``ServiceLevel``: 0 minimal, 1 degraded, 2 full; 2 until a level change is announced).
    """
    reg = registry if registry is not None else REGISTRY
    calls = Counter(
        "langgraph_node_calls_total", "Guarded node calls.", ["node", "outcome"], registry=reg
    )
    seconds = Histogram(
        "langgraph_node_call_seconds",
        "Guarded node call latency (all attempts).",
        ["node"],
        buckets=_LATENCY_BUCKETS,
        registry=reg,
    )
    retries = Counter("langgraph_node_retries_total", "Retried attempts.", ["node"], registry=reg)
    timeouts = Counter(
        "langgraph_node_timeouts_total", "Timed-out attempts.", ["node"], registry=reg
    )
    rejections = Counter(
        "langgraph_node_rejections_total",
        "Calls rejected by a breaker, a bulkhead or the retry budget.",
        ["node", "reason"],
        registry=reg,
    )
    breaker_state = Gauge(
        "langgraph_breaker_state", "0 closed, 1 half-open, 2 open.", ["breaker"], registry=reg
    )
    level = Gauge("langgraph_degradation_level", "0 minimal, 1 degraded, 2 full.", registry=reg)
    # A DegradationManager announces changes only: until one, the service is at FULL (2), not
    # at the gauge's default of 0, which would read as "minimal" on every healthy replica.
    level.set(2)
    states = {"closed": 0, "half_open": 1, "open": 2, "forced_open": 2}

    def on_event(event: ResilienceEvent) -> None:
        detail = event.detail
        kind = event.kind
        if kind is EventKind.CALL:
            calls.labels(event.source, str(detail.get("outcome"))).inc()
            seconds.labels(event.source).observe(float(detail.get("duration_s", 0.0)))
        elif kind is EventKind.RETRY:
            retries.labels(event.source).inc()
        elif kind is EventKind.TIMEOUT:
            timeouts.labels(event.source).inc()
        elif kind is EventKind.BREAKER_REJECTED:
            rejections.labels(str(detail.get("node", event.source)), "breaker").inc()
        elif kind is EventKind.BULKHEAD_REJECTED:
            rejections.labels(event.source, "bulkhead").inc()
        elif kind is EventKind.RETRY_BUDGET_EXHAUSTED:
            rejections.labels(str(detail.get("node", event.source)), "retry_budget").inc()
        elif kind is EventKind.BREAKER_STATE:
            breaker_state.labels(event.source).set(states.get(str(detail.get("new")), -1))
        elif kind is EventKind.DEGRADATION_LEVEL:
            level.set(int(detail.get("new", -1)))

    return (bus or EventBus.default()).subscribe(on_event)
