"""The one list of metric names the deploy assets use, and where they come from.

``referenced_metrics()`` reads them out of ``deploy/prometheus/rules.yml``, the Grafana
dashboard (panels and variables) and the Prometheus adapter rule. Every one must be exported:

- by the saver and the node middleware: ``package_metrics()`` asks prometheus-client for the
  names ``langgraph_resilient.observability.metrics`` really registers;
- by the graph server (issue 13): ``SERVER_METRICS``, its contract. The check against a running
  server's ``/metrics`` output is ``missing_from(exposition)``: give it the text of a scrape
  taken after some traffic (``tests/deploy/test_deployed_server.py`` does, on a real server).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.assets import (
    DEPLOY,
    adapter_expressions,
    dashboard_expressions,
    dashboard_variable_queries,
    names_in,
    rule_expressions,
)

SERVER_METRICS: dict[str, str] = {
    # The seed's KPIs, with its labels.
    "langgraph_requests": "counter",  # _total {method, endpoint (route template), status}
    "langgraph_request_duration_seconds": "histogram",  # {endpoint}
    "langgraph_active_users": "gauge",
    "langgraph_circuit_breaker_state": "gauge",  # {name, state}
    "langgraph_retry_attempts": "counter",  # _total {function, attempt}
    "langgraph_failover_events": "counter",  # _total {from_region, to_region}
    "langgraph_db_connections_active": "gauge",
    "langgraph_db_query_duration_seconds": "histogram",  # {query_type}
    # Runs.
    "langgraph_runs": "counter",  # _total {assistant, status}
    "langgraph_runs_in_flight": "gauge",
}
"""What the graph server exports besides the package's own metrics (its contract), as
prometheus-client families and types: counter ``x`` is exposed as ``x_total``."""

_SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
}


def package_metrics() -> dict[str, str]:
    """The metric families (name: type) the saver and the node middleware register, as
    prometheus-client reports them."""
    from langgraph_resilient.observability.metrics import install_node_metrics

    families = {m.name: m.type for m in REGISTRY.collect() if m.name.startswith("langgraph_")}
    node_registry = CollectorRegistry()
    uninstall = install_node_metrics(registry=node_registry)
    try:
        families |= {m.name: m.type for m in node_registry.collect()}
    finally:
        uninstall()
    return families


def exported_samples() -> frozenset[str]:
    """Every sample name the package and the server expose (``x_total``, ``x_bucket``, ...)."""
    families = {**package_metrics(), **SERVER_METRICS}
    return frozenset(
        name + suffix for name, kind in families.items() for suffix in _SAMPLE_SUFFIXES[kind]
    )


def recorded_names(deploy: Path = DEPLOY) -> frozenset[str]:
    """The series the recording rules of rules.yml create."""
    return frozenset(e.where.split(" ", 1)[1] for e in rule_expressions(deploy) if ":" in e.where)


def referenced_metrics(deploy: Path = DEPLOY) -> dict[str, set[str]]:
    """Every metric sample name the assets query (recording rules left out), and where."""
    expressions = [
        *rule_expressions(deploy),
        *dashboard_expressions(deploy),
        *dashboard_variable_queries(deploy),
        *adapter_expressions(deploy),
    ]
    found: dict[str, set[str]] = defaultdict(set)
    for expression in expressions:
        for name in names_in(expression.promql):
            if ":" not in name:
                found[name].add(expression.where)
    return dict(found)


def referenced_recordings(deploy: Path = DEPLOY) -> dict[str, set[str]]:
    """Every recording rule name the alerts and the dashboard read, and where."""
    found: dict[str, set[str]] = defaultdict(set)
    for expression in [*rule_expressions(deploy), *dashboard_expressions(deploy)]:
        for name in names_in(expression.promql):
            if ":" in name:
                found[name].add(expression.where)
    return dict(found)


def exposed(exposition: str) -> dict[str, str]:
    """Every sample name a scrape of ``/metrics`` (its text) exposes: ``"sample"`` when it
    holds a sample of that name, ``"declared"`` when it only declares its family.

    A family counts by its ``# TYPE`` line, with the sample names its type gives it (counter
    ``x``: ``x_total``; histogram ``x``: ``x_bucket``, ``x_sum``, ``x_count``; gauge ``x``:
    ``x``). That is how a labelled metric looks before its first labelled sample (a breaker
    that never changed state, no failover yet): prometheus-client declares it, and Prometheus
    gets its series as soon as there is one. A declared family of another type does not
    count: a query of ``x_total`` on a gauge ``x`` finds nothing, ever.
    """
    found: dict[str, str] = {}
    for family in text_string_to_metric_families(exposition):
        for suffix in _SAMPLE_SUFFIXES.get(family.type, ()):
            found.setdefault(family.name + suffix, "declared")
        for sample in family.samples:
            found[sample.name] = "sample"
    return found


def missing_from(exposition: str, deploy: Path = DEPLOY) -> dict[str, set[str]]:
    """The metrics the assets query that a scrape of ``/metrics`` (its text) neither holds
    a sample of nor declares (see :func:`exposed`), and where the assets query them."""
    present = exposed(exposition)
    referenced = referenced_metrics(deploy)
    return {name: where for name, where in referenced.items() if name not in present}
