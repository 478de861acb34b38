"""The server as the deploy assets run it: the Deployment's command line and environment
variable names (values made local: loopback, the shared Postgres and Redis, a prefix of its
own, an API key file), so ``--workers 2`` and prometheus-client's multiprocess mode. Every
command line of the assets parses with the real CLI; every probe and scrape path answers
without an API key, the API only with one; and every metric the rules, the alerts, the
dashboard and the HPA's adapter rule query is on its ``/metrics`` after runs of the example
graphs and of a graph that retries, opens a breaker and times out."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from langgraph_resilient.cli import build_parser
from tests.conftest import POSTGRES_URL, REDIS_URL, drop_backend, unique_prefix
from tests.deploy import metric_names
from tests.deploy.assets import DEPLOY, load_yaml
from tests.deploy.rendered import compose, one, rendered, server_container
from tests.server.conftest import EXAMPLE_CONFIG, ServeProcess, sdk
from tests.servers import PostgresServer

pytestmark = pytest.mark.timeout(120)

OVERLAY = "kubernetes/overlays/us-east"
API_KEY = "deploy-test-" + uuid.uuid4().hex


def _local_environment(names: set[str], prefix: str, key_file: Path) -> dict[str, str]:
    """A local value for every variable the Deployment sets; a name the server (or asyncpg,
    for PGPASSWORD) does not read is an error, not a silent no-op."""
    local = {
        "LANGGRAPH_RESILIENT_POSTGRES_URL": POSTGRES_URL,
        "LANGGRAPH_RESILIENT_REDIS_URL": REDIS_URL,
        "LANGGRAPH_RESILIENT_PREFIX": prefix,
        "LANGGRAPH_RESILIENT_API_KEYS_FILE": str(key_file),
        "PGPASSWORD": "unused: the test database trusts loopback",
    }
    unknown = names - set(local)
    assert not unknown, f"the Deployment sets variables nothing reads: {unknown}"
    return {name: local[name] for name in names}


def _local_arguments(args: list[str]) -> list[str]:
    """The Deployment's arguments after ``serve``, made local: the example project for the
    image's /app, loopback for 0.0.0.0, and no --port (ServeProcess picks a free one)."""
    assert args[0] == "serve", args
    local, rest = [], iter(args[1:])
    for arg in rest:
        if arg == "--port":
            next(rest)
        elif arg == "--host":
            next(rest)
            local += [arg, "127.0.0.1"]
        elif arg == "--config":
            assert next(rest) == "/app/langgraph.json"  # the image's APP_DIR, examples/server
            local += [arg, EXAMPLE_CONFIG]
        else:
            local.append(arg)
    return local


@dataclass(frozen=True)
class Deployed:
    server: ServeProcess
    prefix: str
    scrape: str
    """The text of one ``/metrics`` scrape, taken after some traffic."""


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    tmp = tmp_path_factory.mktemp("deployed-server")
    container = server_container(OVERLAY)
    (config_map,) = (
        d
        for d in rendered(OVERLAY)
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("langgraph-server")
    )
    names = {e["name"] for e in container["env"]} | set(config_map["data"])
    key_file = tmp / "api-keys"
    key_file.write_text(f"{API_KEY}\n")
    prefix = unique_prefix()
    server = ServeProcess(
        *_local_arguments(container["args"]),
        "--graph",
        "guarded=tests/deploy/graphs.py:guarded",
        env=_local_environment(names, prefix, key_file),
        log=tmp / "serve.log",
    )
    try:
        server.start()
        yield Deployed(server, prefix, _after_traffic(server))
    finally:
        server.stop()
        asyncio.run(drop_backend("tiered", prefix))


def _after_traffic(server: ServeProcess) -> str:
    async def drive() -> None:
        client = sdk(server.url, api_key=API_KEY)
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


def _command_lines() -> dict[str, list[str]]:
    """Every ``langgraph-resilient`` command line of the assets, by where it is."""
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.M)[1])
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M)[1])
    assert entrypoint == ["langgraph-resilient"]
    (migration,) = one(OVERLAY, "Job")["spec"]["template"]["spec"]["containers"]
    return {
        "Dockerfile CMD": cmd,
        "compose migrate": compose()["services"]["migrate"]["command"],
        "Kubernetes Deployment": server_container(OVERLAY)["args"],
        "Kubernetes migration Job": migration["args"],
    }


def test_every_command_line_of_the_assets_parses() -> None:
    lines = _command_lines()
    for where, argv in lines.items():
        args = build_parser().parse_args(argv)
        assert args.command in ("serve", "migrate"), where
    services = compose()["services"]
    # The compose replicas run the image's CMD.
    assert all("command" not in services[f"server-{i}"] for i in (1, 2, 3))
    with pytest.raises(SystemExit):  # the parser is no rubber stamp: a made-up flag fails
        build_parser().parse_args([*lines["Kubernetes Deployment"], "--drain-grace-seconds", "5"])


async def test_probes_and_scrapes_answer_without_a_key_the_api_only_with_one(
    deployed: Deployed,
) -> None:
    container = server_container(OVERLAY)
    paths = {container[probe]["httpGet"]["path"] for probe in
             ("startupProbe", "livenessProbe", "readinessProbe")}  # fmt: skip
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    paths |= set(re.findall(r"urlopen\('http://127\.0\.0\.1:8000(/\w+)'", dockerfile))
    paths |= {e["path"] for e in one(OVERLAY, "ServiceMonitor")["spec"]["endpoints"]}
    prometheus = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    paths |= {
        j["metrics_path"] for j in prometheus["scrape_configs"] if j["job_name"] == "langgraph"
    }
    haproxy = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    paths |= set(re.findall(r"option httpchk GET (\S+)", haproxy))
    assert paths == {"/health", "/ready", "/metrics"}
    async with httpx.AsyncClient(base_url=deployed.server.url) as http:
        for path in sorted(paths):
            assert (await http.get(path)).status_code == 200, path
        assert (await http.get("/info")).status_code == 401
        assert (await http.get("/info", headers={"x-api-key": API_KEY})).status_code == 200
        # The variables were read: Postgres and Redis (not the embedded default), the prefix.
        checks = (await http.get("/ready")).json()["checks"]
    assert checks["postgres"] == "ok" and checks["redis"] == "ok", checks
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE starts_with(tablename, $1)", deployed.prefix
        )
    finally:
        await conn.close()
    assert f"{deployed.prefix}server_threads" in {t["tablename"] for t in tables}


def test_every_referenced_metric_is_on_the_servers_metrics(deployed: Deployed) -> None:
    scrape = deployed.scrape
    referenced = metric_names.referenced_metrics()
    assert len(referenced) >= 20  # not vacuous: rules, dashboard and adapter name them
    assert metric_names.missing_from(scrape) == {}
    # Presence by declaration alone (HELP/TYPE, no sample) is for labelled metrics that had
    # nothing to count yet: after this traffic only the failovers (no FailoverManager here).
    exposed = metric_names.exposed(scrape)
    declared_only = {name for name in referenced if exposed[name] == "declared"}
    assert declared_only == {"langgraph_failover_events_total"}


def test_degradation_level_reads_full_service(deployed: Deployed) -> None:
    """No DegradationManager changed level: every worker reports 2 (full), so the
    degraded-service alert (min < 2) stays quiet."""
    levels = [
        sample.value
        for family in text_string_to_metric_families(deployed.scrape)
        if family.name == "langgraph_degradation_level"
        for sample in family.samples
    ]
    assert levels and all(level == 2 for level in levels), levels


def test_a_broken_reference_is_reported_missing(deployed: Deployed, tmp_path: Path) -> None:
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
    missing = metric_names.missing_from(deployed.scrape, broken)
    assert set(missing) == {"langgraph_made_up_total", "langgraph_run_total"}
    assert missing["langgraph_made_up_total"] == {"rules.yml MadeUp"}


def test_the_postgres_password_comes_from_pgpassword(tmp_path: Path) -> None:
    """The assets keep the Postgres URL password-free (ConfigMap, compose) and give asyncpg
    the password as PGPASSWORD (a Secret): the migration Job's command, with its variable
    names, against a private Postgres that asks for a password; a wrong one is refused."""
    (migration,) = one(OVERLAY, "Job")["spec"]["template"]["spec"]["containers"]
    assert {e["name"] for e in migration["env"]} == {"PGPASSWORD"}
    postgres = PostgresServer()
    try:
        postgres.start()
        password = uuid.uuid4().hex
        _psql(postgres, f"ALTER ROLE postgres PASSWORD '{password}'")
        hba = postgres.data / "pg_hba.conf"
        hba.write_text("host all all 127.0.0.1/32 scram-sha-256\nlocal all all trust\n")
        _psql(postgres, "SELECT pg_reload_conf()")
        env = {
            "LANGGRAPH_RESILIENT_POSTGRES_URL": postgres.url,  # no password in it
            "LANGGRAPH_RESILIENT_PREFIX": "lgr_",
        }
        for given, code in ((password, 0), ("wrong", 1)):
            done = subprocess.run(
                [sys.executable, "-m", "langgraph_resilient.cli", *migration["args"]],
                env={**os.environ, **env, "PGPASSWORD": given},
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert done.returncode == code, done.stdout + done.stderr
            if code:
                assert "password authentication failed" in done.stderr, done.stderr
    finally:
        postgres.destroy()


def _psql(postgres: PostgresServer, sql: str) -> None:
    subprocess.run(
        ["runuser", "-u", "postgres", "--", "psql", "-h", str(postgres.root),
         "-p", str(postgres.port), "-U", "postgres", "-d", "postgres", "-c", sql],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
