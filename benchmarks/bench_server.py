"""Serving benchmark: runs through langgraph-sdk on this server, on ``langgraph dev`` with the
plug and with its default checkpointer, against a direct ``ainvoke`` with the same saver.

Run it with::

    .venv/bin/python -m benchmarks.bench_server            # full run
    .venv/bin/python -m benchmarks.bench_server --quick    # smoke run (< 1 min)

Workload: the 5-node ``chain`` graph of ``examples/server/graph.py``. For every target and
concurrency (1 and 32), ``--runs`` runs are made, each on a thread of its own worker (a worker
reuses its thread, so every run continues its thread's history), ``c`` workers at once; each
run is timed from the request to its last byte (``runs.wait``) or last event
(``runs.stream``). The report gives p50/p99 ms per run, runs per second, and ratios to the
direct ``ainvoke`` (the floor: the same saver, no HTTP). Every target uses Postgres + Redis
(``--postgres-url``, ``--redis-url``) except ``langgraph dev (default)``, whose checkpointer is
its own in-memory one. ``langgraph dev`` polls its run queue about once a second, so it gets
``--dev-runs`` runs per cell.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
GRAPH = str(ROOT / "examples" / "server" / "graph.py")
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
FLOOR = "direct ainvoke"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout_s} s")


class Process:
    """A server child process, stopped with SIGTERM/SIGINT and waited for."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, health: str) -> None:
        # The log outlives this call (the child writes to it): closed in stop().
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="bench-server-", suffix=".log", delete=False
        )
        self.proc = subprocess.Popen(
            args, env=env, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT
        )
        _wait_http(health, self.proc)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def start_ours(args: argparse.Namespace, prefix: str) -> tuple[Process, str]:
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "langgraph_resilient.cli",
        "serve",
        "--graph",
        f"chain={GRAPH}:chain",
        "--port",
        str(port),
        "--postgres-url",
        args.postgres_url,
        "--redis-url",
        args.redis_url,
        "--prefix",
        prefix,
        "--log-level",
        "warning",
    ]
    env = {**os.environ, "LANGGRAPH_RESILIENT_LOG_LEVEL": "warning"}
    proc = Process(command, env, ROOT, f"http://127.0.0.1:{port}/health")
    return proc, f"http://127.0.0.1:{port}"


def start_dev(
    args: argparse.Namespace, prefix: str, plug: bool, workdir: Path
) -> tuple[Process, str]:
    port = _free_port()
    project = workdir / ("plug" if plug else "default")
    project.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "dependencies": ["."],
        "graphs": {"chain": f"{GRAPH}:chain"},
        "env": {},
    }
    if plug:
        config["checkpointer"] = {
            "backend": "custom",
            "path": "langgraph_resilient.langgraph_server:checkpointer",
        }
    (project / "langgraph.json").write_text(json.dumps(config))
    env = {
        **os.environ,
        "LANGGRAPH_RESILIENT_POSTGRES_URL": args.postgres_url,
        "LANGGRAPH_RESILIENT_REDIS_URL": args.redis_url,
        "LANGGRAPH_RESILIENT_PREFIX": prefix,
        "LANGSMITH_TRACING": "false",
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LOG_LEVEL": "WARNING",
    }
    langgraph = str(Path(sys.executable).parent / "langgraph")
    command = [
        langgraph,
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
    proc = Process(command, env, project, f"http://127.0.0.1:{port}/ok")
    return proc, f"http://127.0.0.1:{port}"


async def timed_runs(
    run_once: Callable[[int], Awaitable[Any]], runs: int, concurrency: int
) -> dict[str, float]:
    """``runs`` runs by ``concurrency`` workers; latency percentiles and throughput."""
    latencies: list[float] = []
    per_worker = [
        runs // concurrency + (1 if i < runs % concurrency else 0) for i in range(concurrency)
    ]

    async def worker(index: int, count: int) -> None:
        for _ in range(count):
            started = time.perf_counter()
            await run_once(index)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i, n) for i, n in enumerate(per_worker) if n))
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "runs": len(ordered),
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "runs_per_s": len(ordered) / wall,
    }


async def bench_sdk(url: str, mode: str, runs: int, concurrency: int) -> dict[str, float]:
    from langgraph_sdk import get_client

    client = get_client(url=url, api_key=None)
    threads = [(await client.threads.create())["thread_id"] for _ in range(concurrency)]
    await client.runs.wait(threads[0], "chain", input={"n": 0})  # warm up

    async def once(worker: int) -> None:
        if mode == "wait":
            await client.runs.wait(threads[worker], "chain", input={"n": 0})
        else:
            async for _ in client.runs.stream(
                threads[worker], "chain", input={"n": 0}, stream_mode="values"
            ):
                pass

    return await timed_runs(once, runs, concurrency)


async def bench_direct(
    args: argparse.Namespace, prefix: str, runs: int, concurrency: int
) -> dict[str, float]:
    from examples.server.graph import chain_builder
    from langgraph_resilient import ResilientSaver

    async with ResilientSaver.from_urls(
        postgres_url=args.postgres_url, redis_url=args.redis_url, prefix=prefix
    ) as saver:
        graph = chain_builder.compile(checkpointer=saver)
        threads = [str(uuid.uuid4()) for _ in range(concurrency)]
        await graph.ainvoke({"n": 0}, {"configurable": {"thread_id": threads[0]}})

        async def once(worker: int) -> None:
            await graph.ainvoke({"n": 0}, {"configurable": {"thread_id": threads[worker]}})

        return await timed_runs(once, runs, concurrency)


async def drop(args: argparse.Namespace, prefix: str) -> None:
    import asyncpg
    import redis.asyncio

    conn = await asyncpg.connect(args.postgres_url)
    try:
        for row in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE starts_with(tablename, $1)", prefix
        ):
            await conn.execute(f'DROP TABLE IF EXISTS "{row["tablename"]}" CASCADE')
    finally:
        await conn.close()
    client = redis.asyncio.Redis.from_url(args.redis_url)
    async for key in client.scan_iter(match=f"{prefix}*", count=1000):
        await client.delete(key)
    await client.aclose()


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    prefix = f"bench{uuid.uuid4().hex[:8]}_"
    work = Path(tempfile.mkdtemp(prefix="bench-server-"))
    try:
        for c in args.concurrency:
            stats = await bench_direct(args, prefix, args.runs, c)
            for mode in ("wait", "stream"):
                rows.append({"target": FLOOR, "mode": mode, "concurrency": c, **stats})
        targets: list[tuple[str, Callable[[], tuple[Process, str]], int]] = [
            ("this server", lambda: start_ours(args, prefix), args.runs),
            ("langgraph dev + plug", lambda: start_dev(args, prefix, True, work), args.dev_runs),
            (
                "langgraph dev (default)",
                lambda: start_dev(args, prefix, False, work),
                args.dev_runs,
            ),
        ]
        for name, start, runs in targets:
            if name.startswith("langgraph dev") and args.skip_dev:
                continue
            proc, url = await asyncio.to_thread(start)
            try:
                for c in args.concurrency:
                    for mode in ("wait", "stream"):
                        stats = await bench_sdk(url, mode, max(runs, c), c)
                        rows.append({"target": name, "mode": mode, "concurrency": c, **stats})
                        print(
                            f"{name:26} {mode:6} c={c:<3} p50 {stats['p50_ms']:8.2f} ms "
                            f"p99 {stats['p99_ms']:8.2f} ms {stats['runs_per_s']:8.1f} runs/s",
                            flush=True,
                        )
            finally:
                await asyncio.to_thread(
                    proc.stop, signal.SIGINT if name.startswith("langgraph") else signal.SIGTERM
                )
    finally:
        await drop(args, prefix)
    return rows


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    floor = {(r["mode"], r["concurrency"]): r for r in rows if r["target"] == FLOOR}
    lines = [
        f"# Serving benchmark, {dt.date.today().isoformat()}",
        "",
        f"Command: `.venv/bin/python -m benchmarks.bench_server {' '.join(sys.argv[1:])}`".rstrip(),
        f"Runs per cell: {args.runs} (langgraph dev: {args.dev_runs}); 5-node chain; "
        "Postgres + Redis on loopback, 2 cores shared with the servers.",
        "",
        "| target | mode | c | p50 ms | p99 ms | runs/s | p50 - floor (ms) | throughput / floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = floor.get((r["mode"], r["concurrency"]))
        extra = r["p50_ms"] - base["p50_ms"] if base else float("nan")
        ratio = r["runs_per_s"] / base["runs_per_s"] if base else float("nan")
        lines.append(
            f"| {r['target']} | {r['mode']} | {r['concurrency']} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['runs_per_s']:.1f} | {extra:+.2f} | {ratio:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--postgres-url", default=os.environ.get("LGR_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("LGR_BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    )
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--dev-runs", type=int, default=40)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--quick", action="store_true", help="few runs: checks the benchmark works")
    parser.add_argument("--skip-dev", action="store_true", help="only this server and the floor")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.dev_runs = 40, 8
    rows = asyncio.run(main_async(args))
    text = report(rows, args)
    print(text)
    if not args.no_save:
        RESULTS_DIR.mkdir(exist_ok=True)
        stem = RESULTS_DIR / f"server-{dt.date.today().isoformat()}"
        stem.with_suffix(".md").write_text(text)
        stem.with_suffix(".json").write_text(
            json.dumps({"args": vars(args), "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
