"""The targets ``bench_server`` measures, each in a process of its own, kept warm all run.

- :class:`ServeTarget`: ``langgraph-resilient serve`` (this checkout, or the sources of another
  git revision for a before/after run), driven through langgraph-sdk;
- :class:`DevTarget`: ``langgraph dev`` with the plug or with its default checkpointer, driven
  through langgraph-sdk;
- :class:`FloorTarget`: a direct ``graph.ainvoke`` with the same saver as the server, in a
  floor worker process (``python -m benchmarks.serving``) on the same event loop as uvicorn's
  (uvloop), so that the floor pays for one Python process and one event loop, as the server
  does, and not for sharing the benchmark's own loop with the clients.

Every target runs one *cell* (a mode, a concurrency, a number of runs) at a time with
:meth:`run_cell`: it makes ``concurrency`` fresh threads, warms up (every thread runs at least
once, so no timed run is a thread's first), then times ``runs`` runs by ``concurrency``
workers, each worker continuing its own thread. It returns the latency of every run (request to
last byte or last event, or ``ainvoke`` call to return) and the wall time of the timed part.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
GRAPH = str(ROOT / "examples" / "server" / "graph.py")
LEASE_TTL_S = 30.0
"""The server's default ``--lease-ttl-s``; the floor's lease variant uses the same."""
ENQUEUE_WAIT_S = 60.0
"""The server's default ``--enqueue-wait-s`` (how long a run waits for its thread's lease)."""


@dataclass
class Sample:
    """One timed cell of one target: every run's latency (seconds), the wall time, and the CPU
    seconds used meanwhile by the target's process (all its threads), by the client driving it
    (the SDK in the benchmark's process; 0 for the floor, whose driver is in its own process),
    and by the whole machine (every process: Postgres, Redis, other work)."""

    latencies_s: list[float]
    wall_s: float
    cpu_s: float
    client_cpu_s: float
    machine_cpu_s: float


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> float:
    """Busy CPU seconds of the whole machine so far, all cores (``/proc/stat``: everything
    but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return busy / os.sysconf("SC_CLK_TCK")


def _cpu_now(pid: int | None) -> tuple[float, float, float]:
    """(target, client, machine) CPU seconds: the target is process ``pid`` driven from this
    process, or this process itself (``pid=None``, no separate client)."""
    if pid is None:
        return time.process_time(), 0.0, machine_cpu_s()
    return process_cpu_s(pid), time.process_time(), machine_cpu_s()


async def timed_runs(
    run_once: Callable[[int], Awaitable[Any]], runs: int, concurrency: int, pid: int | None = None
) -> Sample:
    """``runs`` runs by ``concurrency`` workers (worker ``i`` passes ``i``), timed; the target
    is process ``pid`` (default: this process)."""
    latencies: list[float] = []
    per_worker = [
        runs // concurrency + (1 if i < runs % concurrency else 0) for i in range(concurrency)
    ]

    async def worker(index: int, count: int) -> None:
        for _ in range(count):
            started = time.perf_counter()
            await run_once(index)
            latencies.append(time.perf_counter() - started)

    before = _cpu_now(pid)
    started = time.perf_counter()
    await asyncio.gather(*(worker(i, n) for i, n in enumerate(per_worker) if n))
    wall = time.perf_counter() - started
    target, client, machine = (b - a for a, b in zip(before, _cpu_now(pid), strict=True))
    return Sample(latencies, wall, target, client, machine)


async def warm_up(run_once: Callable[[int], Awaitable[Any]], runs: int, concurrency: int) -> None:
    """Untimed: every worker's thread runs once, then more runs up to ``runs``."""
    await asyncio.gather(*(run_once(i) for i in range(concurrency)))
    if runs > concurrency:
        await timed_runs(run_once, runs - concurrency, concurrency)


# ---------------------------------------------------------------------------------- processes


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """A child process of the benchmark, its output in a log file, stopped by its PID."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        cwd: Path,
        *,
        stdin: int | None = None,
        stdout: int | None = None,
    ) -> None:
        # The log outlives this call (the child writes to it): closed in stop().
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="bench-server-", suffix=".log", delete=False
        )
        self.proc = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdin=stdin,
            stdout=stdout if stdout is not None else self.log,
            stderr=subprocess.STDOUT if stdout is None else self.log,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_http(self, url: str, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{url}: exited with {self.proc.returncode}: {self.tail()}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{url} did not answer in {timeout_s} s: {self.tail()}")

    def tail(self, chars: int = 2000) -> str:
        return Path(self.log.name).read_text(errors="replace")[-chars:]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


@contextlib.contextmanager
def py_spy(pid: int, out: Path) -> Iterator[None]:
    """Sample process ``pid`` with py-spy (the threads holding the GIL, 200 Hz) into ``out``
    (speedscope format: https://www.speedscope.app, or any tool reading it)."""
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(binary).exists():
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    command = [binary, "record", "--pid", str(pid), "--gil", "--rate", "200", "--nonblocking"]
    spy = subprocess.Popen(
        [*command, "--format", "speedscope", "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # attached before the timed runs start
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            spy.wait(timeout=60)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


# ---------------------------------------------------------------------------------- SDK targets


class SdkTarget:
    """A server driven through langgraph-sdk's default client (``get_client(url=...)``)."""

    kind = "server"

    def __init__(self, name: str) -> None:
        self.name = name
        self.process: Process | None = None
        self.url = ""
        self._client: Any = None
        self.profile_dir: Path | None = None
        """Record the server process with py-spy during every timed cell, into this folder."""
        self._profiles = 0

    def _start(self) -> None:
        raise NotImplementedError

    def _stop_signal(self) -> int:
        return signal.SIGTERM

    async def start(self) -> None:
        from langgraph_sdk import get_client

        await asyncio.to_thread(self._start)
        self._client = get_client(url=self.url, api_key=None)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        if self.process is not None:
            await asyncio.to_thread(self.process.stop, self._stop_signal())

    async def run_cell(self, mode: str, concurrency: int, runs: int, warmup: int) -> Sample:
        client = self._client
        threads = [(await client.threads.create())["thread_id"] for _ in range(concurrency)]

        async def once(worker: int) -> None:
            if mode == "wait":
                await client.runs.wait(threads[worker], "chain", input={"n": 0})
            else:
                async for _ in client.runs.stream(
                    threads[worker], "chain", input={"n": 0}, stream_mode="values"
                ):
                    pass

        await warm_up(once, warmup, concurrency)
        gc.collect()
        assert self.process is not None
        if self.profile_dir is None:
            return await timed_runs(once, runs, concurrency, self.process.pid)
        self._profiles += 1
        out = self.profile_dir / f"{mode}-c{concurrency}-{self._profiles}.speedscope.json"
        with py_spy(self.process.pid, out):
            return await timed_runs(once, runs, concurrency, self.process.pid)


class ServeTarget(SdkTarget):
    """``langgraph-resilient serve`` on Postgres + Redis, one uvicorn worker.

    ``source`` is a directory holding a ``langgraph_resilient`` package to serve instead of
    this checkout's (another revision's sources, for a before/after run): the server runs with
    it first on ``PYTHONPATH`` (and ``-P``, so the working directory does not come first)."""

    def __init__(
        self,
        name: str,
        postgres_url: str,
        redis_url: str,
        prefix: str,
        source: Path = ROOT,
        pool_max_size: int | None = None,
    ) -> None:
        super().__init__(name)
        self.postgres_url = postgres_url
        self.redis_url = redis_url
        self.prefix = prefix
        self.source = source
        self.pool_max_size = pool_max_size

    def _start(self) -> None:
        port = free_port()
        command = [
            sys.executable,
            "-P",
            "-m",
            "langgraph_resilient.cli",
            "serve",
            "--graph",
            f"chain={GRAPH}:chain",
            "--port",
            str(port),
            "--postgres-url",
            self.postgres_url,
            "--redis-url",
            self.redis_url,
            "--prefix",
            self.prefix,
            "--log-level",
            "warning",
        ]
        if self.pool_max_size is not None:
            command += ["--pool-max-size", str(self.pool_max_size)]
        env = {**os.environ, "PYTHONPATH": str(self.source)}
        self.process = Process(command, env, ROOT)
        self.url = f"http://127.0.0.1:{port}"
        self.process.wait_http(f"{self.url}/ready")


class DevTarget(SdkTarget):
    """``langgraph dev`` (langgraph-cli, in-memory runtime), with the plug or without."""

    kind = "dev"

    def __init__(
        self,
        name: str,
        postgres_url: str,
        redis_url: str,
        prefix: str,
        plug: bool,
        workdir: Path,
    ) -> None:
        super().__init__(name)
        self.postgres_url = postgres_url
        self.redis_url = redis_url
        self.prefix = prefix
        self.plug = plug
        self.workdir = workdir

    def _stop_signal(self) -> int:
        return signal.SIGINT

    def _start(self) -> None:
        port = free_port()
        project = self.workdir / ("plug" if self.plug else "default")
        project.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "dependencies": ["."],
            "graphs": {"chain": f"{GRAPH}:chain"},
            "env": {},
        }
        if self.plug:
            config["checkpointer"] = {
                "backend": "custom",
                "path": "langgraph_resilient.langgraph_server:checkpointer",
            }
        (project / "langgraph.json").write_text(json.dumps(config))
        env = {
            **os.environ,
            "LANGGRAPH_RESILIENT_POSTGRES_URL": self.postgres_url,
            "LANGGRAPH_RESILIENT_REDIS_URL": self.redis_url,
            "LANGGRAPH_RESILIENT_PREFIX": self.prefix,
            "LANGSMITH_TRACING": "false",
            "LANGGRAPH_CLI_NO_ANALYTICS": "1",
            "LOG_LEVEL": "WARNING",
        }
        command = [
            str(Path(sys.executable).parent / "langgraph"),
            "dev",
            "--config",
            "langgraph.json",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--no-browser",
            "--no-reload",
        ]
        self.process = Process(command, env, project)
        self.url = f"http://127.0.0.1:{port}"
        self.process.wait_http(f"{self.url}/ok")


# ---------------------------------------------------------------------------------- the floor


class FloorWorker:
    """The floor worker process: one saver and graph, commands on stdin, results on stdout."""

    def __init__(
        self, postgres_url: str, redis_url: str, prefix: str, pool_max_size: int | None = None
    ) -> None:
        self.args = [postgres_url, redis_url, prefix, str(pool_max_size or 10)]
        self.process: Process | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        if self.process is not None:
            return
        command = [sys.executable, "-m", "benchmarks.serving", *self.args]
        self.process = Process(
            command, dict(os.environ), ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        await self.call({"cmd": "ping"})

    async def call(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.process is not None
        proc = self.process.proc
        stdin, stdout = proc.stdin, proc.stdout
        assert stdin is not None and stdout is not None

        def exchange() -> str:
            stdin.write((json.dumps(command) + "\n").encode())
            stdin.flush()
            return stdout.readline().decode()

        async with self._lock:
            line = await asyncio.to_thread(exchange)
        if not line:
            raise RuntimeError(f"the floor worker exited: {self.process.tail()}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"floor worker: {reply['error']}")
        return reply

    async def close(self) -> None:
        if self.process is not None:
            stdin = self.process.proc.stdin
            if stdin is not None:
                with contextlib.suppress(OSError):
                    stdin.close()  # end of input: the worker closes its saver and exits
            await asyncio.to_thread(self.process.stop)
            self.process = None


class FloorTarget:
    """A direct ``graph.ainvoke`` in the floor worker; ``lease`` holds
    ``saver.lock_thread(thread_id)`` around each, as the server does around every run."""

    kind = "floor"

    def __init__(self, name: str, worker: FloorWorker, *, lease: bool) -> None:
        self.name = name
        self.worker = worker
        self.lease = lease

    async def start(self) -> None:
        await self.worker.start()

    async def close(self) -> None:
        await self.worker.close()

    async def run_cell(self, mode: str, concurrency: int, runs: int, warmup: int) -> Sample:
        reply = await self.worker.call(
            {
                "cmd": "run",
                "lease": self.lease,
                "concurrency": concurrency,
                "runs": runs,
                "warmup": warmup,
            }
        )
        return Sample(**reply)


async def _floor_main(
    postgres_url: str, redis_url: str, prefix: str, pool_max_size: int, replies: IO[str]
) -> None:
    from examples.server.graph import chain_builder
    from langgraph_resilient import ResilientSaver

    # The server's saver, as `serve --postgres-url --redis-url --prefix --pool-max-size` opens it.
    async with ResilientSaver.from_urls(
        postgres_url=postgres_url, redis_url=redis_url, prefix=prefix, pool_max_size=pool_max_size
    ) as saver:
        graph = chain_builder.compile(checkpointer=saver, name="chain")
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            command = json.loads(line)
            try:
                reply = await _floor_command(saver, graph, command)
            except Exception as exc:
                reply = {"error": repr(exc)}
            replies.write(json.dumps(reply) + "\n")
            replies.flush()


async def _floor_command(saver: Any, graph: Any, command: dict[str, Any]) -> dict[str, Any]:
    if command["cmd"] == "ping":
        return {"ok": True}
    concurrency = int(command["concurrency"])
    threads = [str(uuid.uuid4()) for _ in range(concurrency)]

    async def once(worker: int) -> None:
        thread_id = threads[worker]
        config = {"configurable": {"thread_id": thread_id}}
        if command["lease"]:
            async with saver.lock_thread(thread_id, ttl_s=LEASE_TTL_S, wait_s=ENQUEUE_WAIT_S):
                await graph.ainvoke({"n": 0}, config)
        else:
            await graph.ainvoke({"n": 0}, config)

    await warm_up(once, int(command["warmup"]), concurrency)
    gc.collect()
    sample = await timed_runs(once, int(command["runs"]), concurrency)
    return dataclasses.asdict(sample)


def main() -> None:
    """``python -m benchmarks.serving POSTGRES_URL REDIS_URL PREFIX POOL_MAX_SIZE``: the floor
    worker."""
    import uvloop

    postgres_url, redis_url, prefix, pool_max_size = sys.argv[1:5]
    # stdout carries the replies: anything else printed goes to stderr (the log).
    replies, sys.stdout = sys.stdout, sys.stderr
    uvloop.run(_floor_main(postgres_url, redis_url, prefix, int(pool_max_size), replies))


if __name__ == "__main__":
    main()
