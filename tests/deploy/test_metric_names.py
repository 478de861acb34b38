"""Every metric the rules, the alerts, the dashboard and the HPA's adapter rule query is one
the package or the graph server exports (the list: tests/deploy/metric_names.py)."""

from __future__ import annotations

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


def test_exposed_counts_declared_families_by_their_type() -> None:
    """How a scrape is read (the live check is test_deployed_server.py): a sample counts, and a
    family declared with no sample yet counts with the sample names of its type only."""
    scrape = (
        "# HELP langgraph_failover_events_total Failovers.\n"
        "# TYPE langgraph_failover_events_total counter\n"
        "# HELP langgraph_runs_in_flight Runs.\n"
        "# TYPE langgraph_runs_in_flight gauge\n"
        "langgraph_runs_in_flight 3.0\n"
        "# HELP langgraph_requests Mistyped: a gauge, not a counter.\n"
        "# TYPE langgraph_requests gauge\n"
    )
    exposed = metric_names.exposed(scrape)
    assert exposed["langgraph_failover_events_total"] == "declared"
    assert exposed["langgraph_runs_in_flight"] == "sample"
    assert "langgraph_requests_total" not in exposed
    missing = metric_names.missing_from(scrape)
    assert "langgraph_failover_events_total" not in missing
    assert "langgraph_runs_in_flight" not in missing
    assert "langgraph_requests_total" in missing
    assert "langgraph_checkpoint_op_seconds_bucket" in missing
