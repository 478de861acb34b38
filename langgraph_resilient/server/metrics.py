"""The server's Prometheus metrics: the seed's KPI names, runs, and the ``/metrics`` output.

With several uvicorn workers, prometheus-client's multiprocess mode is used: ``serve`` sets
``PROMETHEUS_MULTIPROC_DIR`` before the workers start, every worker writes its samples to
files there, and ``/metrics`` on any worker aggregates all of them. Gauges say how they
aggregate (``multiprocess_mode``): in-flight runs add up across workers, the values read from
the database at scrape time take the most recent.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import Metric

from langgraph_resilient.observability.events import EventBus, EventKind, ResilienceEvent
from langgraph_resilient.observability.metrics import install_node_metrics

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_DB_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)

REQUESTS = Counter(
    "langgraph_requests_total",
    "HTTP requests by method, route template (endpoint) and status code.",
    ["method", "endpoint", "status"],
)
REQUEST_SECONDS = Histogram(
    "langgraph_request_duration_seconds",
    "HTTP request latency by route template (streams: until the last byte).",
    ["endpoint"],
    buckets=_BUCKETS,
)
ACTIVE_USERS = Gauge(
    "langgraph_active_users",
    "Threads with a run started in the last 5 minutes, on every replica (from the durable "
    "tier at scrape time).",
    multiprocess_mode="mostrecent",
)
CIRCUIT_BREAKER_STATE = Gauge(
    "langgraph_circuit_breaker_state",
    "1 for the state each circuit breaker is in (closed, half_open, open, forced_open), else 0.",
    ["name", "state"],
    multiprocess_mode="mostrecent",
)
RETRY_ATTEMPTS = Counter(
    "langgraph_retry_attempts_total",
    "Failed attempts that the retry middleware retried, by function (node) and attempt number.",
    ["function", "attempt"],
)
FAILOVER_EVENTS = Counter(
    "langgraph_failover_events_total",
    "Regional failovers (recorded with record_failover, e.g. by a FailoverManager).",
    ["from_region", "to_region"],
)
DB_CONNECTIONS_ACTIVE = Gauge(
    "langgraph_db_connections_active",
    "Connections of the server's thread-record pool checked out at scrape time.",
    multiprocess_mode="livesum",
)
DB_QUERY_SECONDS = Histogram(
    "langgraph_db_query_duration_seconds",
    "Latency of the server's thread-record queries by query type (the saver's own "
    "operations are in langgraph_checkpoint_op_seconds).",
    ["query_type"],
    buckets=_DB_BUCKETS,
)
RUNS = Counter(
    "langgraph_runs_total",
    "Finished runs by assistant (graph name) and status (success, error, interrupted, "
    "cancelled, rejected).",
    ["assistant", "status"],
)
RUNS_IN_FLIGHT = Gauge(
    "langgraph_runs_in_flight",
    "Runs executing now (holding their thread's lease, or stateless).",
    multiprocess_mode="livesum",
)

_BREAKER_STATES = ("closed", "half_open", "open", "forced_open")


class db_query:  # lower case: used like a function, `with db_query("thread_get"):`
    """Time one thread-record query into ``langgraph_db_query_duration_seconds``."""

    __slots__ = ("_child", "_started")

    def __init__(self, query_type: str) -> None:
        child = _QUERY_CHILDREN.get(query_type)
        if child is None:
            child = _QUERY_CHILDREN[query_type] = DB_QUERY_SECONDS.labels(query_type)
        self._child: Any = child
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._child.observe(time.perf_counter() - self._started)


_QUERY_CHILDREN: dict[str, Any] = {}


def record_failover(from_region: str, to_region: str) -> None:
    """Count a regional failover in ``langgraph_failover_events_total``."""
    FAILOVER_EVENTS.labels(from_region, to_region).inc()


def _on_event(event: ResilienceEvent) -> None:
    if event.kind is EventKind.RETRY:
        RETRY_ATTEMPTS.labels(event.source, str(event.detail.get("attempt", ""))).inc()
    elif event.kind is EventKind.BREAKER_STATE:
        new = str(event.detail.get("new"))
        for state in _BREAKER_STATES:
            CIRCUIT_BREAKER_STATE.labels(event.source, state).set(1 if state == new else 0)


_unsubscribe: Callable[[], None] | None = None


def install_event_metrics() -> None:
    """Feed breaker states and retries from the middleware's event bus, and export the
    middleware's own metrics (``install_node_metrics``: node calls, retries, timeouts,
    rejections, breaker state, degradation level), once per process."""
    global _unsubscribe
    if _unsubscribe is None:
        _unsubscribe = EventBus.default().subscribe(_on_event)
        # (the degradation level starts at FULL there, so a server whose graphs never degrade
        # does not fire the degraded-service alert of deploy/prometheus/rules.yml)
        with contextlib.suppress(ValueError):  # the application installed them itself
            install_node_metrics()


def multiprocess_dir() -> str | None:
    """The multiprocess directory when several workers share the metrics."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def render() -> tuple[bytes, str]:
    """The ``/metrics`` body and content type (all workers' samples in multiprocess mode)."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        collector = multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        present = {family.name for family in collector.collect()}  # type: ignore[no-untyped-call]
        registry.register(_Declarations(present))
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class _Declarations:
    """HELP and TYPE of the ``langgraph_`` metrics of this process's registry (the server's,
    the saver's and the middleware's) that no worker has a sample of yet: the multiprocess
    collector only reports metrics with samples, and dashboards (and the tests) expect every
    name. The process and platform collectors are left out: they describe one worker."""

    def __init__(self, present: set[str]) -> None:
        self.present = present

    def collect(self) -> Any:
        for family in REGISTRY.collect():
            if family.name.startswith("langgraph_") and family.name not in self.present:
                yield Metric(family.name, family.documentation, family.type, family.unit)


def mark_worker_dead() -> None:
    """Drop this worker's live gauges from the aggregate (multiprocess mode) at exit."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
