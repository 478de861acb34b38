"""/metrics (promtool, every seed KPI, several workers), API keys, body limit, bind refusal,
CORS off by default: against real server processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from langgraph_sdk.errors import AuthenticationError

from tests.server.conftest import ROOT, ServeProcess, sdk, serving

pytestmark = pytest.mark.timeout(180)

SEED_KPIS = [
    "langgraph_requests_total",
    "langgraph_request_duration_seconds",
    "langgraph_active_users",
    "langgraph_circuit_breaker_state",
    "langgraph_retry_attempts_total",
    "langgraph_failover_events_total",
    "langgraph_db_connections_active",
    "langgraph_db_query_duration_seconds",
    "langgraph_runs_total",
    "langgraph_runs_in_flight",
    "langgraph_checkpoint_op_seconds",
]
KEY = "s3cret-key-for-tests"


def promtool(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("secured")
    for servers in serving(
        "tiered",
        tmp,
        "--workers",
        "2",
        "--max-body-bytes",
        "4096",
        env={"LANGGRAPH_RESILIENT_API_KEYS": f"other-key,{KEY}"},
    ):
        yield servers[0]


async def test_api_keys(secured: ServeProcess) -> None:
    with pytest.raises(AuthenticationError):
        await sdk(secured.url).assistants.search()
    with pytest.raises(AuthenticationError):
        await sdk(secured.url, api_key="wrong").assistants.search()
    client = sdk(secured.url, api_key=KEY)
    assert len(await client.assistants.search()) == 3
    async with httpx.AsyncClient(base_url=secured.url) as http:
        assert (await http.get("/health")).status_code == 200  # probes stay open
        assert (await http.get("/ready")).status_code == 200


async def test_body_limit_and_cors_off(secured: ServeProcess) -> None:
    headers = {"x-api-key": KEY}
    async with httpx.AsyncClient(base_url=secured.url, headers=headers) as http:
        big = await http.post("/threads", json={"metadata": {"blob": "x" * 10_000}})
        assert big.status_code == 413
        assert "4096" in big.json()["detail"]
        small = await http.post("/threads", json={"metadata": {"blob": "x"}})
        assert small.status_code == 200
        preflight = await http.options(
            "/threads",
            headers={"origin": "http://evil.example", "access-control-request-method": "POST"},
        )
        assert "access-control-allow-origin" not in preflight.headers


async def test_metrics_with_two_workers(secured: ServeProcess) -> None:
    client = sdk(secured.url, api_key=KEY)
    tid = (await client.threads.create())["thread_id"]
    for _ in range(4):  # spread over both workers (new connections each time)
        await sdk(secured.url, api_key=KEY).runs.wait(tid, "chain", input={"n": 0})
    async with httpx.AsyncClient(base_url=secured.url) as http:
        text = (await http.get("/metrics")).text
    for name in SEED_KPIS:
        assert f"# TYPE {name}" in text, name
    runs = [
        line
        for line in text.splitlines()
        if line.startswith('langgraph_runs_total{assistant="chain"')
    ]
    assert runs and sum(float(line.split()[-1]) for line in runs) == 4.0  # both workers' runs
    assert 'endpoint="/threads/{thread_id}/runs/wait"' in text  # the route template
    assert f"/threads/{tid}" not in text
    checked = promtool(text)
    assert checked.returncode == 0, checked.stderr + checked.stdout
    broken = promtool('# TYPE x counter\nx{a="1" 1\n')
    assert broken.returncode != 0


def test_single_worker_metrics_promtool(tmp_path: Path) -> None:
    from langgraph_sdk import get_sync_client

    for servers in serving("sqlite", tmp_path):
        client = get_sync_client(url=servers[0].url, api_key=None)
        client.runs.wait(None, "chain", input={"n": 0})
        text = httpx.get(f"{servers[0].url}/metrics").text
        for name in SEED_KPIS:
            assert f"# TYPE {name}" in text, name
        assert promtool(text).returncode == 0


def test_refuses_public_bind_without_keys() -> None:
    command = [
        sys.executable,
        "-m",
        "langgraph_resilient.cli",
        "serve",
        "--graph",
        "chain=examples/server/graph.py:chain",
        "--host",
        "0.0.0.0",
        "--port",
        "1",
    ]
    refused = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "--insecure-no-auth" in refused.stderr


def test_help_is_fast_and_lazy() -> None:
    probe = (
        "import sys, langgraph_resilient.cli as c; c.build_parser(); "
        "print(any(m.startswith(('fastapi', 'uvicorn', 'starlette')) for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_migrate_creates_the_server_tables(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "m.db"
    command = [
        sys.executable,
        "-m",
        "langgraph_resilient.cli",
        "migrate",
        "--sqlite-path",
        str(db),
        "--prefix",
        "mig_",
    ]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "server tables (mig_server_threads): schema version 0 -> 1" in out.stdout
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version FROM mig_server_schema").fetchone() == (1,)
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "schema version 1 -> 1" in again.stdout
