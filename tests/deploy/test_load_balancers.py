"""The load balancers live: three real ``langgraph-resilient serve`` replicas on one Postgres
and one Redis (a prefix of their own), the committed HAProxy configuration (then nginx's) in
front, load from langgraph-sdk clients, and a replica killed or restarted under it.

Numbers each scenario measured are printed (``pytest -s`` shows them): the time HAProxy took
to mark a killed replica DOWN, the requests that failed, the runs that completed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socketserver
import ssl
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import drop_backend, unique_prefix
from tests.deploy.assets import DEPLOY
from tests.deploy.balancers import HAPROXY_SERVERS, Haproxy, Nginx, StatusWatch
from tests.deploy.load import Load, Request, check_store, in_flight_at
from tests.server.conftest import ServeProcess, backend_args

pytestmark = pytest.mark.timeout(240)

API_KEY = "deploy-test-" + os.urandom(8).hex()
WORKERS = 6
"""Client concurrency: at most this many requests are in flight at any time."""
INTER_S, FALL = 1.0, 2
"""haproxy.cfg's health check: a dead replica is DOWN within INTER_S x FALL."""
TALLY = "tally=tests/deploy/graphs.py:tally"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("balancers")


@pytest.fixture(scope="module")
def replicas(workdir: Path) -> Iterator[list[ServeProcess]]:
    """Three replicas as the assets run them (API keys required, probes and /metrics open),
    started at once (their migrations take turns under the server's advisory lock)."""
    prefix = unique_prefix()
    args = (*backend_args("tiered", prefix, workdir), "--graph", TALLY)
    env = {"LANGGRAPH_RESILIENT_API_KEYS": API_KEY}
    servers = [ServeProcess(*args, env=env, log=workdir / f"replica{i}.log") for i in range(1, 4)]
    try:
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(ServeProcess.start, servers))
        yield servers
    finally:
        for server in servers:
            server.stop()
        asyncio.run(drop_backend("tiered", prefix))


def _addresses(replicas: list[ServeProcess]) -> list[str]:
    return [f"127.0.0.1:{r.port}" for r in replicas]


@pytest.fixture(scope="module")
def haproxy(replicas: list[ServeProcess], workdir: Path) -> Iterator[Haproxy]:
    proxy = Haproxy(_addresses(replicas), workdir).start()
    try:
        for server in HAPROXY_SERVERS:
            proxy.wait_status(server, "UP")
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def nginx(replicas: list[ServeProcess], workdir: Path) -> Iterator[Nginx]:
    proxy = Nginx(_addresses(replicas), workdir).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def trust_nginx(nginx: Nginx, monkeypatch: pytest.MonkeyPatch) -> None:
    """langgraph-sdk's httpx clients trust nginx's throwaway certificate."""
    monkeypatch.setenv("SSL_CERT_FILE", nginx.certificate)


def _kill(replica: ServeProcess) -> float:
    assert replica.proc is not None
    replica.proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    replica.proc.wait(timeout=10)
    return killed_at


async def _soon(check: Callable[[], Awaitable[bool]], timeout_s: float = 3.0) -> None:
    """Wait until ``check()`` holds, at most ``timeout_s`` (then go on regardless)."""
    for _ in range(int(timeout_s / 0.01)):
        if await check():
            return
        await asyncio.sleep(0.01)


def _path(request: Request) -> str:
    """The path a load request was sent to."""
    return f"/threads/{request.thread_id}/runs/wait" if request.kind == "run" else "/threads"


def _report(scenario: str, load: Load, **numbers: object) -> None:
    runs = load.runs
    ok = sum(1 for r in runs if r.error is None)
    extra = ", ".join(f"{k}={v}" for k, v in numbers.items())
    print(
        f"\n[{scenario}] requests={len(load.requests)} runs={len(runs)} succeeded={ok} "
        f"failed={len(load.failed)} ({sorted({r.error or '' for r in load.failed})}) {extra}"
    )


# ------------------------------------------------------------------------------- HAProxy


async def test_haproxy_marks_a_killed_replica_down(
    haproxy: Haproxy, replicas: list[ServeProcess]
) -> None:
    victim, survivor = replicas[1], replicas[0]
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{victim.url}/metrics")).status_code == 200
        assert (await http.get(f"{haproxy.url}/metrics")).status_code == 404  # stays private
    before = len(haproxy.log())
    load = Load(haproxy.url, API_KEY, workers=WORKERS)
    load.start()
    await asyncio.sleep(2.0)
    # Kill just after HAProxy gave the victim a new request (its session total grew): that
    # run has most of its ~0.35 s ahead of it, so something is in flight on the victim.
    served = int(haproxy.servers()["app2"]["stot"])

    async def new_request() -> bool:
        return int(haproxy.servers()["app2"]["stot"]) > served

    await _soon(new_request)
    with StatusWatch(haproxy) as watch:
        killed_at = _kill(victim)
        await asyncio.sleep(3.0)
    await load.stop()

    down_at = watch.first("app2", "DOWN", after=killed_at)
    assert down_at is not None, watch.changes
    assert down_at - killed_at <= INTER_S * FALL, watch.changes
    failed = load.failed
    assert 1 <= len(failed) <= WORKERS, failed
    assert all(in_flight_at(r, killed_at) for r in failed), (killed_at, failed)
    # HAProxy's log: whatever did not end normally was aborted by the killed replica (S...):
    # 502 before its response began (SH), a cut response after it began (SD: runs/wait sends
    # its headers when the run starts). On a kept-alive client connection, a request whose
    # replica died before answering is closed without a response and without a log line
    # (HAProxy's keep-alive abort, see deploy/README.md): those are the unlogged failures.
    log = haproxy.log()[before:]
    aborted = [line for line in log if line.termination != "----" or line.status >= 500]
    assert all(line.server == "app2" and line.termination[0] == "S" for line in aborted), aborted
    aborted_paths = {line.path for line in aborted}
    failed_paths = {_path(r) for r in failed}
    assert aborted_paths <= failed_paths, (aborted, failed)
    unlogged = [r for r in failed if _path(r) not in aborted_paths]
    assert all(r.error == "RemoteProtocolError" for r in unlogged), unlogged
    redispatched = [line for line in log if line.retries.startswith("+")]
    assert all(line.status < 500 for line in redispatched), redispatched
    store = await check_store(survivor.url, API_KEY, load.requests)
    assert store.succeeded == len(load.runs) - len([r for r in failed if r.kind == "run"])
    _report(
        "haproxy kill -9",
        load,
        down_after_s=round(down_at - killed_at, 3),
        aborted_logged=len(aborted),
        keepalive_aborts=len(unlogged),
        redispatched=len(redispatched),
        store=store,
    )
    victim.start()
    haproxy.wait_status("app2", "UP")


def _rolling_restart(haproxy: Haproxy, *args: str) -> subprocess.CompletedProcess[str]:
    script = [str(DEPLOY / "haproxy" / "rolling-restart.sh"), "-s", haproxy.socket, "-t", "30"]
    return subprocess.run([*script, *args], capture_output=True, text=True, timeout=150)


def test_rolling_restart_refuses_to_drain_the_last_server(haproxy: Haproxy) -> None:
    for server in ("app2", "app3"):
        haproxy.api(f"set server langgraph_servers/{server} state maint")
    try:
        refused = _rolling_restart(haproxy, "drain", "app1")
        assert refused.returncode == 1 and "no other server" in refused.stderr, refused
        assert haproxy.servers()["app1"]["status"] == "UP"
        unknown = _rolling_restart(haproxy, "drain", "app9")
        assert unknown.returncode == 1 and "no server langgraph_servers/app9" in unknown.stderr
    finally:
        for server in ("app2", "app3"):
            haproxy.api(f"set server langgraph_servers/{server} state ready")
    for server in ("app2", "app3"):
        haproxy.wait_status(server, "UP")


class _Restarts(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Restarts a replica when rolling-restart.sh's COMMAND asks (one line: the HAProxy
    server name), answering ``ok`` once it runs again. The replicas stay children of the
    test process, which waits for their exit."""

    daemon_threads = True

    def __init__(self, path: str, replicas: list[ServeProcess]) -> None:
        self.replicas = replicas
        self.done: list[tuple[str, int, float]] = []
        super().__init__(path, _RestartHandler)


class _RestartHandler(socketserver.StreamRequestHandler):
    server: _Restarts

    def handle(self) -> None:
        name = self.rfile.readline().decode().strip()
        replica = self.server.replicas[HAPROXY_SERVERS.index(name)]
        started = time.monotonic()
        replica.sigterm()
        code = replica.wait(60)
        stopped = time.monotonic()
        replica.start()
        self.server.done.append((name, code, stopped - started))
        self.wfile.write(b"ok\n")


async def test_haproxy_rolling_restart_fails_no_request(
    haproxy: Haproxy, replicas: list[ServeProcess], workdir: Path
) -> None:
    socket_path = str(workdir / "restart.sock")
    restarts = _Restarts(socket_path, replicas)
    serve = threading.Thread(target=restarts.serve_forever, daemon=True)
    serve.start()
    ask = f'printf "%s\\n" "$1" | socat -t 90 - UNIX-CONNECT:{socket_path} | grep -qx ok'
    load = Load(haproxy.url, API_KEY, workers=WORKERS)
    before = len(haproxy.log())
    try:
        load.start()
        await asyncio.sleep(1.0)
        began = time.monotonic()
        done = await asyncio.to_thread(
            _rolling_restart, haproxy, "restart", "sh", "-c", ask, "restart-replica"
        )
        took = time.monotonic() - began
        served_before = {n: int(row["stot"]) for n, row in haproxy.servers().items()}
        await asyncio.sleep(1.5)  # every replica is back in rotation
    finally:
        await load.stop()
        restarts.shutdown()
        restarts.server_close()
    assert done.returncode == 0, done.stdout + done.stderr
    assert [(name, code) for name, code, _ in restarts.done] == [(n, 0) for n in HAPROXY_SERVERS]
    assert load.failed == []
    log = haproxy.log()[before:]
    assert all(line.termination == "----" and line.status < 400 for line in log)
    served_after = {n: int(row["stot"]) for n, row in haproxy.servers().items()}
    assert all(served_after[n] > served_before[n] for n in HAPROXY_SERVERS), served_after
    store = await check_store(replicas[2].url, API_KEY, load.requests)
    assert store.succeeded == len(load.runs)
    _report(
        "haproxy rolling restart",
        load,
        took_s=round(took, 1),
        restart_s=[round(s, 2) for _, _, s in restarts.done],
        store=store,
    )


# --------------------------------------------------------------------------------- nginx


async def _runs_in_flight(replica: ServeProcess) -> float:
    async with httpx.AsyncClient() as http:
        scrape = (await http.get(f"{replica.url}/metrics", timeout=5)).text
    line = next(x for x in scrape.splitlines() if x.startswith("langgraph_runs_in_flight "))
    return float(line.split()[1])


async def test_nginx_passes_on_from_a_killed_replica(
    nginx: Nginx, replicas: list[ServeProcess], trust_nginx: None
) -> None:
    victim, survivor = replicas[1], replicas[0]
    address = f"127.0.0.1:{victim.port}"
    async with httpx.AsyncClient(
        verify=ssl.create_default_context(cafile=nginx.certificate)
    ) as http:
        assert (await http.get(f"{nginx.url}/metrics")).status_code == 404  # stays private
    before, errors_before = len(nginx.log()), len(nginx.errors())
    load = Load(nginx.url, API_KEY, workers=WORKERS)
    load.start()
    await asyncio.sleep(2.0)

    async def busy() -> bool:  # two runs in flight on the victim (least_conn spreads them)
        return await _runs_in_flight(victim) >= 2

    await _soon(busy)
    killed_at = _kill(victim)
    await asyncio.sleep(3.0)
    await load.stop()

    failed = load.failed
    assert 1 <= len(failed) <= WORKERS, failed
    assert all(in_flight_at(r, killed_at) for r in failed), (killed_at, failed)
    # nginx's error log: one "upstream prematurely closed connection" per failed request,
    # each on the killed replica (before its response began: 502; after: a cut response).
    errors = nginx.errors()[errors_before:]
    closed = [e for e in errors if e.message.startswith("upstream prematurely closed")]
    assert len(closed) == len(failed), (closed, failed)
    assert all(e.upstream == address for e in closed), closed
    log = nginx.log()[before:]
    assert not [line for line in log if line.status == 429]  # under the rate limit
    assert all(line.upstreams[-1] == address for line in log if line.status >= 500)
    # After the kill, requests nginx sent to the dead replica found its port closed and went
    # to the next replica (a connection error: nothing was sent), until max_fails took it out.
    passed_on = [line for line in log if len(line.upstreams) > 1]
    assert all(line.status < 500 and line.upstreams[0] == address for line in passed_on)
    store = await check_store(survivor.url, API_KEY, load.requests)
    _report("nginx kill -9", load, passed_on=len(passed_on), store=store)
    victim.start()


async def test_nginx_restart_by_sigterm_alone(
    nginx: Nginx, replicas: list[ServeProcess], trust_nginx: None
) -> None:
    """No step on nginx (it has no runtime API): one replica gets SIGTERM and is started
    again. Measured, not a procedure to follow: a POST that reaches a draining replica gets
    its 503, which nginx does not pass on (it never re-sends a POST that reached a replica)."""
    load = Load(nginx.url, API_KEY, workers=WORKERS)
    before = len(nginx.log())
    load.start()
    await asyncio.sleep(1.5)
    replica = replicas[0]
    replica.sigterm()
    assert await asyncio.to_thread(replica.wait, 60) == 0
    await asyncio.to_thread(replica.start)
    await asyncio.sleep(1.0)
    await load.stop()
    # What goes wrong is a refusal, never a half-run: a draining replica answers a new run
    # 503 (with Retry-After) and lets the runs it has finish; a 502 can only be nginx sending
    # on a kept-alive connection the stopping replica closed at that moment. Either way the
    # run left nothing in the store.
    failed = load.failed
    assert all((r.error == "503" and r.retry_after) or r.error == "502" for r in failed), failed
    store = await check_store(replicas[1].url, API_KEY, load.requests)
    assert store.failed_absent == len([r for r in failed if r.kind == "run"])
    log = nginx.log()[before:]
    passed_on = [line for line in log if len(line.upstreams) > 1]
    _report("nginx restart, SIGTERM alone", load, passed_on=len(passed_on), store=store)


async def test_nginx_rolling_restart_with_reload_fails_no_request(
    nginx: Nginx, replicas: list[ServeProcess], trust_nginx: None
) -> None:
    """The procedure of deploy/README.md: mark the replica ``down`` in upstream.conf and
    reload nginx (new workers send it nothing; the old ones finish their requests), SIGTERM
    it (it drains), start it, remove ``down``, reload."""
    load = Load(nginx.url, API_KEY, workers=WORKERS)
    before = len(nginx.log())
    load.start()
    await asyncio.sleep(1.0)
    began = time.monotonic()
    for replica in replicas:
        nginx.write_upstreams(down=[f"127.0.0.1:{replica.port}"])
        await asyncio.to_thread(nginx.reload)
        replica.sigterm()
        assert await asyncio.to_thread(replica.wait, 60) == 0
        await asyncio.to_thread(replica.start)
        nginx.write_upstreams(down=[])
        await asyncio.to_thread(nginx.reload)
    took = time.monotonic() - began
    await asyncio.sleep(1.0)
    await load.stop()
    assert load.failed == []
    log = nginx.log()[before:]
    assert all(line.status < 400 for line in log), [x for x in log if x.status >= 400]
    store = await check_store(replicas[2].url, API_KEY, load.requests)
    assert store.succeeded == len(load.runs)
    _report("nginx rolling restart, reload with down", load, took_s=round(took, 1), store=store)
