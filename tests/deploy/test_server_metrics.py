"""Every metric the rules, the alerts, the dashboard and the HPA's adapter rule query is on a
real server's ``/metrics``: ``langgraph-resilient serve`` with two workers (the Deployment's
``--workers 2``, so prometheus-client's multiprocess mode) on Postgres + Redis, after runs of
the example graphs and of a graph that retries, opens a breaker and times out."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy import metric_names
from tests.deploy.assets import DEPLOY
from tests.server.conftest import ServeProcess, sdk, serving

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The text of one ``/metrics`` scrape, taken after some traffic."""
    tmp = tmp_path_factory.mktemp("server-metrics")
    extra = ("--workers", "2", "--graph", "guarded=tests/deploy/graphs.py:guarded")
    for servers in serving("tiered", tmp, *extra):
        yield _after_traffic(servers[0])


def _after_traffic(server: ServeProcess) -> str:
    async def drive() -> None:
        client = sdk(server.url)
        for _ in range(3):
            thread = (await client.threads.create(metadata={"deploy": "metrics"}))["thread_id"]
            assert await client.runs.wait(thread, "chain", input={"n": 0}) == {"n": 5}
            async for _part in client.runs.stream(thread, "chain", input={"n": 1}):
                pass
        await client.threads.search(metadata={"deploy": "metrics"})
        # Six runs over two workers: one worker serves at least three, so its breaker opens
        # after two failed calls and rejects the third.
        for _ in range(6):
            result = await client.runs.wait(None, "guarded", input={"run": uuid.uuid4().hex})
            assert result["log"][0] == "flaky"  # the retry made it
            assert result["log"][-1] == "sluggish: fallback"  # the timeout's fallback

    asyncio.run(drive())
    response = httpx.get(f"{server.url}/metrics", timeout=10)  # no API key: a scrape
    assert response.status_code == 200
    return response.text


def test_every_referenced_metric_is_on_the_servers_metrics(scrape: str) -> None:
    referenced = metric_names.referenced_metrics()
    assert len(referenced) >= 20  # not vacuous: rules, dashboard and adapter name them
    assert metric_names.missing_from(scrape) == {}
    # Presence by declaration alone (HELP/TYPE, no sample) is for labelled metrics that had
    # nothing to count yet: after this traffic only the failovers (no FailoverManager here).
    exposed = metric_names.exposed(scrape)
    declared_only = {name for name in referenced if exposed[name] == "declared"}
    assert declared_only == {"langgraph_failover_events_total"}


def test_degradation_level_reads_full_service(scrape: str) -> None:
    """No DegradationManager changed level: every worker reports 2 (full), so the
    degraded-service alert (min < 2) stays quiet."""
    levels = [
        sample.value
        for family in text_string_to_metric_families(scrape)
        if family.name == "langgraph_degradation_level"
        for sample in family.samples
    ]
    assert levels and all(level == 2 for level in levels), levels


def test_a_broken_reference_is_reported_missing(scrape: str, tmp_path: Path) -> None:
    """A copy of the assets with a made-up metric in an alert and a typo in a dashboard
    query: both are reported, and nothing else."""
    broken = tmp_path / "deploy"
    shutil.copytree(DEPLOY, broken)
    rules = broken / "prometheus" / "rules.yml"
    rules.write_text(
        rules.read_text()
        + "      - alert: MadeUp\n        expr: rate(langgraph_made_up_total[5m]) > 0\n"
    )
    dashboard = broken / "grafana" / "dashboard.json"
    text = dashboard.read_text()
    assert "langgraph_runs_total" in text
    dashboard.write_text(text.replace("langgraph_runs_total", "langgraph_run_total"))
    missing = metric_names.missing_from(scrape, broken)
    assert set(missing) == {"langgraph_made_up_total", "langgraph_run_total"}
    assert missing["langgraph_made_up_total"] == {"rules.yml MadeUp"}
