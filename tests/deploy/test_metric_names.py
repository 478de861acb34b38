"""Every metric the rules, the alerts, the dashboard and the HPA's adapter rule query is one
the package or the graph server exports (the list: tests/deploy/metric_names.py)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from langgraph_resilient import ResilientSaver
from langgraph_resilient.observability.metrics import install_node_metrics
from tests.deploy import metric_names
from tests.deploy.assets import dashboard_expressions, names_in


def test_every_referenced_metric_is_exported() -> None:
    exported = metric_names.exported_samples()
    referenced = metric_names.referenced_metrics()
    unknown = {name: where for name, where in referenced.items() if name not in exported}
    assert not unknown, unknown
    # The list is not vacuous: it names the seed's KPIs and the saver's tier metrics.
    for name in (
        "langgraph_requests_total",
        "langgraph_request_duration_seconds_bucket",
        "langgraph_checkpoint_op_seconds_bucket",
        "langgraph_checkpoint_cache_reads_total",
        "langgraph_breaker_state",
        "langgraph_failover_events_total",
        "langgraph_db_query_duration_seconds_bucket",
    ):
        assert name in referenced


def test_every_recording_rule_read_is_defined() -> None:
    used = metric_names.referenced_recordings()
    assert used, "the alerts read recording rules"
    assert set(used) <= metric_names.recorded_names()


def test_the_package_metrics_are_the_registered_ones() -> None:
    families = metric_names.package_metrics()
    assert families["langgraph_checkpoint_op_seconds"] == "histogram"
    assert families["langgraph_breaker_state"] == "gauge"
    assert families["langgraph_node_calls"] == "counter"


def test_names_in_reads_metrics_not_label_values_or_functions() -> None:
    promql = (
        'sum by (job) (rate(langgraph_requests_total{status=~"langgraph_x"}[5m]))'
        " / job:langgraph_runs:rate5m"
    )
    assert names_in(promql) == {"langgraph_requests_total", "job:langgraph_runs:rate5m"}
    assert all(names_in(e.promql) for e in dashboard_expressions())


async def test_missing_from_reads_a_real_scrape(tmp_path: Path) -> None:
    """``missing_from`` on a real scrape of the package's metrics after real saver traffic:
    what the saver recorded is present; the server's metrics (checked against a live server in
    phase 2) are reported missing."""
    registry = CollectorRegistry()
    uninstall = install_node_metrics(registry=registry)
    try:
        async with ResilientSaver.from_urls(sqlite_path=str(tmp_path / "state.db")) as saver:
            await saver.aget_tuple({"configurable": {"thread_id": "t"}})
        scrape = (generate_latest(REGISTRY) + generate_latest(registry)).decode()
    finally:
        uninstall()
    missing = metric_names.missing_from(scrape)
    referenced = metric_names.referenced_metrics()
    for present in (
        "langgraph_checkpoint_op_seconds_bucket",  # the saver's read, just now
        "langgraph_checkpoint_redis_available",  # unlabelled gauges always have a sample
        "langgraph_degradation_level",
    ):
        assert present in referenced and present not in missing
    server = {
        name
        for name in referenced
        if name.removesuffix("_total").removesuffix("_bucket") in metric_names.SERVER_METRICS
    }
    assert server <= set(missing)
