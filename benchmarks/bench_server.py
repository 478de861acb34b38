"""Serving benchmark: runs through langgraph-sdk on this server, on ``langgraph dev`` with the
plug and with its default checkpointer, against a direct ``ainvoke`` with the same saver.

Run it with::

    .venv/bin/python -m benchmarks.bench_server                    # full run (~10 min)
    .venv/bin/python -m benchmarks.bench_server --quick            # smoke run (~2 min)
    .venv/bin/python -m benchmarks.bench_server --skip-dev --baseline-ref main   # before/after

Workload: the 5-node ``chain`` graph of ``examples/server/graph.py`` on Postgres + Redis
(``--postgres-url``, ``--redis-url``), except ``langgraph dev (default)``, whose checkpointer
is its own in-memory one. Cells: ``runs/wait`` and ``runs/stream`` (``stream_mode="values"``)
at each ``--concurrency`` (1 and 32). Targets, each in its own process started once and kept
warm for the whole run (``benchmarks/serving.py``):

- ``direct ainvoke``: the floor, ``graph.ainvoke`` with the server's saver configuration, in a
  worker process on uvloop (uvicorn's loop); ``direct ainvoke + lease`` holds
  ``saver.lock_thread`` around each run, as the server does (what the lease costs);
- ``this server``: ``langgraph-resilient serve`` of this checkout (and ``this server @REF``
  for every ``--baseline-ref``: the same command on that git revision's sources);
- ``langgraph dev + plug`` and ``langgraph dev (default)``.

Fairness: every repeat runs every cell for every target, the targets of a cell back to back in
an order rotated each repeat (A B C, B C A, C A B...), so a slow spell of the shared machine
hits every target alike; every target warms up before each timed cell (fresh threads that all
run once, plus more runs), so no timed run is cold or a thread's first. The report pools the
runs of all repeats for p50/p99, gives throughput as runs over wall time, the spread across
repeats (min-max of the repeats' p50 and runs/s), and the ratios to the floor of the same
cell, also per repeat (the floor ran next to the target in the same repeat).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from benchmarks.serving import (
    ROOT,
    DevTarget,
    FloorTarget,
    FloorWorker,
    Sample,
    ServeTarget,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
FLOOR = "direct ainvoke"
MODES = ("wait", "stream")
OVERHEAD_TARGET_MS = 3.0
"""Issue 13: the server adds at most this much to a run's p50 over the floor at c=1."""
THROUGHPUT_TARGET = 0.6
"""Issue 13: the server reaches at least this share of the floor's throughput at c=32."""


class Target(Protocol):
    name: str
    kind: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def run_cell(self, mode: str, concurrency: int, runs: int, warmup: int) -> Sample: ...


@dataclass
class Cell:
    """One target's samples of one (mode, concurrency), one per repeat."""

    target: str
    kind: str
    mode: str
    concurrency: int
    samples: list[Sample] = field(default_factory=list)
    deadlocks: list[int] = field(default_factory=list)
    """Postgres deadlocks detected during each repeat of the cell (the whole database)."""

    @property
    def latencies_ms(self) -> list[float]:
        return sorted(x * 1000 for s in self.samples for x in s.latencies_s)

    def p50_ms(self) -> float:
        return statistics.median(self.latencies_ms)

    def p99_ms(self) -> float:
        ordered = self.latencies_ms
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]

    def runs_per_s(self) -> float:
        return sum(len(s.latencies_s) for s in self.samples) / sum(s.wall_s for s in self.samples)

    def cpu_ms_per_run(self, which: str = "cpu_s") -> float:
        """CPU milliseconds per run: ``cpu_s`` (the target's process), ``client_cpu_s`` or
        ``machine_cpu_s`` (see :class:`Sample`)."""
        runs = sum(len(s.latencies_s) for s in self.samples)
        return sum(getattr(s, which) for s in self.samples) / runs * 1000

    def repeat_p50_ms(self) -> list[float]:
        return [_p50(s) * 1000 for s in self.samples]

    def repeat_runs_per_s(self) -> list[float]:
        return [_rate(s) for s in self.samples]


def _p50(sample: Sample) -> float:
    return statistics.median(sample.latencies_s)


def _rate(sample: Sample) -> float:
    return len(sample.latencies_s) / sample.wall_s


def _export_sources(ref: str, into: Path) -> Path:
    """The ``langgraph_resilient`` package of git revision ``ref``, extracted under ``into``."""
    target = into / f"src-{ref.replace('/', '_')}"
    target.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "langgraph_resilient"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def _targets(args: argparse.Namespace, prefix: str, work: Path) -> list[Target]:
    pg, redis = args.postgres_url, args.redis_url
    worker = FloorWorker(pg, redis, prefix, args.pool_max_size)
    ours = ServeTarget("this server", pg, redis, prefix, pool_max_size=args.pool_max_size)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        ours.profile_dir = args.profile
    targets: list[Target] = [
        FloorTarget(FLOOR, worker, lease=False),
        FloorTarget(f"{FLOOR} + lease", worker, lease=True),
        ours,
    ]
    for ref in args.baseline_ref:
        targets.append(
            ServeTarget(f"this server @{ref}", pg, redis, prefix, _export_sources(ref, work))
        )
    if not args.skip_dev:
        targets.append(DevTarget("langgraph dev + plug", pg, redis, prefix, True, work))
        targets.append(DevTarget("langgraph dev (default)", pg, redis, prefix, False, work))
    return targets


def _runs_for(target: Target, concurrency: int, args: argparse.Namespace) -> tuple[int, int]:
    """(timed runs, warm-up runs) per repeat: ``langgraph dev`` takes ~1 s a run."""
    if target.kind == "dev":
        return max(args.dev_runs, concurrency), concurrency
    return max(args.runs, concurrency), max(args.warmup, concurrency)


async def _deadlocks(conn: Any) -> int:
    # Counted by Postgres for the whole database, so other clients of a shared one count too.
    return int(
        await conn.fetchval(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        )
    )


async def measure(args: argparse.Namespace, prefix: str, work: Path) -> list[Cell]:
    import asyncpg

    targets = _targets(args, prefix, work)
    cells: dict[tuple[str, str, int], Cell] = {}
    conn = await asyncpg.connect(args.postgres_url)
    try:
        for target in targets:
            await target.start()
        for repeat in range(args.repeats):
            for concurrency in args.concurrency:
                for mode in MODES:
                    shift = repeat % len(targets)
                    for target in targets[shift:] + targets[:shift]:
                        runs, warmup = _runs_for(target, concurrency, args)
                        deadlocks = await _deadlocks(conn)
                        sample = await target.run_cell(mode, concurrency, runs, warmup)
                        key = (target.name, mode, concurrency)
                        cell = cells.setdefault(
                            key, Cell(target.name, target.kind, mode, concurrency)
                        )
                        cell.samples.append(sample)
                        cell.deadlocks.append(await _deadlocks(conn) - deadlocks)
                        print(
                            f"repeat {repeat + 1}/{args.repeats} {target.name:28} {mode:6} "
                            f"c={concurrency:<3} p50 {_p50(sample) * 1000:8.2f} ms "
                            f"{_rate(sample):8.1f} runs/s "
                            f"{sample.cpu_s / len(sample.latencies_s) * 1000:6.2f} ms CPU/run",
                            flush=True,
                        )
    finally:
        await conn.close()
        for target in reversed(targets):
            try:
                await target.close()
            except Exception as exc:
                print(f"closing {target.name} failed: {exc!r}", file=sys.stderr)
    return list(cells.values())


async def drop(args: argparse.Namespace, prefix: str) -> None:
    """Remove the run's tables and keys (its own prefix only: the servers are shared)."""
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


# ---------------------------------------------------------------------------------- report


def _span(values: list[float], digits: int = 1) -> str:
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def _pairs(cell: Cell, floor: Cell) -> tuple[list[float], list[float]]:
    """Per repeat: p50 minus the floor's p50 (ms), and runs/s over the floor's runs/s."""
    pairs = list(zip(cell.samples, floor.samples, strict=True))
    extra = [(_p50(a) - _p50(b)) * 1000 for a, b in pairs]
    ratio = [_rate(a) / _rate(b) for a, b in pairs]
    return extra, ratio


def rows(cells: list[Cell]) -> list[dict[str, Any]]:
    floors = {(c.mode, c.concurrency): c for c in cells if c.target == FLOOR}
    out = []
    for cell in sorted(cells, key=lambda c: (c.concurrency, MODES.index(c.mode))):
        floor = floors[(cell.mode, cell.concurrency)]
        extra, ratio = _pairs(cell, floor)
        out.append(
            {
                "target": cell.target,
                "kind": cell.kind,
                "mode": cell.mode,
                "concurrency": cell.concurrency,
                "runs": len(cell.latencies_ms),
                "p50_ms": cell.p50_ms(),
                "p99_ms": cell.p99_ms(),
                "runs_per_s": cell.runs_per_s(),
                "cpu_ms_per_run": cell.cpu_ms_per_run(),
                "client_cpu_ms_per_run": cell.cpu_ms_per_run("client_cpu_s"),
                "machine_cpu_ms_per_run": cell.cpu_ms_per_run("machine_cpu_s"),
                "deadlocks": cell.deadlocks,
                "repeat_p50_ms": cell.repeat_p50_ms(),
                "repeat_runs_per_s": cell.repeat_runs_per_s(),
                "p50_minus_floor_ms": cell.p50_ms() - floor.p50_ms(),
                "throughput_over_floor": cell.runs_per_s() / floor.runs_per_s(),
                "repeat_p50_minus_floor_ms": extra,
                "repeat_throughput_over_floor": ratio,
            }
        )
    return out


def _verdicts(table: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in table:
        if r["kind"] != "server":
            continue
        if r["concurrency"] == 1:
            ok = r["p50_minus_floor_ms"] <= OVERHEAD_TARGET_MS
            lines.append(
                f"- {r['target']}, {r['mode']}, c=1: adds {r['p50_minus_floor_ms']:+.2f} ms "
                f"(per repeat {_span(r['repeat_p50_minus_floor_ms'], 2)}), target <= "
                f"{OVERHEAD_TARGET_MS:g} ms: {'pass' if ok else 'FAIL'}"
            )
        elif r["concurrency"] >= 32:
            ok = r["throughput_over_floor"] >= THROUGHPUT_TARGET
            lines.append(
                f"- {r['target']}, {r['mode']}, c={r['concurrency']}: "
                f"{r['throughput_over_floor']:.2f}x the floor's throughput (per repeat "
                f"{_span(r['repeat_throughput_over_floor'], 2)}), target >= "
                f"{THROUGHPUT_TARGET:g}x: {'pass' if ok else 'FAIL'}"
            )
    return lines


def report(table: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"# Serving benchmark, {meta['date']}",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {meta['cpus']} cores shared with other work (Postgres, Redis, the servers "
        f"and the clients all on it); load average {meta['load_before']:.2f} before, "
        f"{meta['load_after']:.2f} after; Python {meta['python']}; commit {meta['commit']}"
        f"{' (dirty tree)' if meta['dirty'] else ''}.",
        f"Repeats: {meta['repeats']}, in rotated target order; per repeat and cell: "
        f"{meta['runs']} timed runs after {meta['warmup']} warm-up runs (langgraph dev: "
        f"{meta['dev_runs']}, at least one per worker). 5-node chain, Postgres + Redis on "
        "loopback; fresh threads per cell, each run continues its worker's thread. The saver's "
        f"Postgres pool: {meta['pool_max_size'] or '10 (its default)'} connections.",
        "",
        "p50/p99 pool every repeat's runs; runs/s is runs over wall time; `spread` columns are "
        "the min-max over repeats; `vs floor` compares with `direct ainvoke` in the same cell "
        "(the per-repeat spread pairs each repeat with the floor of that repeat).",
        "",
        "| target | mode | c | p50 ms | p99 ms | runs/s | p50 spread | runs/s spread "
        "| p50 - floor ms | per repeat | runs/s / floor | per repeat |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['target']} | {r['mode']} | {r['concurrency']} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['runs_per_s']:.1f} | {_span(r['repeat_p50_ms'])} | "
            f"{_span(r['repeat_runs_per_s'])} | {r['p50_minus_floor_ms']:+.2f} | "
            f"{_span(r['repeat_p50_minus_floor_ms'], 2)} | {r['throughput_over_floor']:.2f}x | "
            f"{_span(r['repeat_throughput_over_floor'], 2)} |"
        )
    lines += [
        "",
        "## Where the CPU goes",
        "",
        "CPU milliseconds per run, over the timed runs of every repeat: the target's own process "
        "(the server, or the floor worker), the client driving it (langgraph-sdk in the "
        "benchmark's process; the floor drives itself), and the whole machine (those two, "
        "Postgres, Redis, and whatever else runs). At concurrency 32 the 2 cores are the limit, "
        "so throughput follows the machine's CPU per run. Deadlocks: Postgres deadlocks "
        "detected during the cell's repeats (database-wide).",
        "",
        "| target | mode | c | target CPU | client CPU | machine CPU | deadlocks |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['target']} | {r['mode']} | {r['concurrency']} | {r['cpu_ms_per_run']:.2f} | "
            f"{r['client_cpu_ms_per_run']:.2f} | {r['machine_cpu_ms_per_run']:.2f} | "
            f"{sum(r['deadlocks'])} |"
        )
    lines += ["", "## Targets (issue 13)", "", *_verdicts(table)]
    return "\n".join(lines) + "\n"


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def _interrupt(sig: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--postgres-url", default=os.environ.get("LGR_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("LGR_BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    )
    parser.add_argument("--runs", type=int, default=200, help="timed runs per cell and repeat")
    parser.add_argument("--warmup", type=int, default=40, help="warm-up runs per cell and repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dev-runs", type=int, default=8, help="langgraph dev: runs per repeat")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--quick", action="store_true", help="few runs: checks the benchmark works")
    parser.add_argument("--skip-dev", action="store_true", help="leave out langgraph dev")
    parser.add_argument(
        "--baseline-ref",
        action="append",
        default=[],
        metavar="REF",
        help="also serve the sources of this git revision (before/after in one run)",
    )
    parser.add_argument(
        "--pool-max-size",
        type=int,
        metavar="N",
        help="the saver's Postgres pool for the floor and `serve --pool-max-size N` (default: "
        "the saver's, 10; 5 or fewer: one writer); not with --baseline-ref",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record `this server` with py-spy during its timed cells, one speedscope file per "
        "cell in DIR (slows it down: not a run to report)",
    )
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    if args.pool_max_size is not None and args.baseline_ref:
        parser.error("--pool-max-size: earlier revisions of serve have no such flag")
    if args.quick:
        args.runs, args.warmup, args.repeats, args.dev_runs = 40, 10, 2, 2
    if args.profile:
        args.no_save = True  # py-spy slows the server down: its numbers are not results
    load_before = os.getloadavg()[0]
    prefix = f"bench{uuid.uuid4().hex[:8]}_"
    work = Path(tempfile.mkdtemp(prefix="bench-server-"))
    # SIGTERM ends the run like Ctrl-C: the servers are stopped and the prefix dropped.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        cells = asyncio.run(measure(args, prefix, work))
    finally:
        asyncio.run(drop(args, prefix))
    table = rows(cells)
    meta = {
        "date": dt.date.today().isoformat(),
        "command": f".venv/bin/python -m benchmarks.bench_server {' '.join(sys.argv[1:])}".rstrip(),
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "python": platform.python_version(),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--", ":/", ":(exclude)benchmarks/results")),
        "repeats": args.repeats,
        "runs": args.runs,
        "warmup": args.warmup,
        "dev_runs": args.dev_runs,
        "pool_max_size": args.pool_max_size,
        "finished_at": time.time(),
    }
    text = report(table, meta)
    print(text)
    if not args.no_save:
        RESULTS_DIR.mkdir(exist_ok=True)
        stem = RESULTS_DIR / f"server-{meta['date']}{'-quick' if args.quick else ''}"
        stem.with_suffix(".md").write_text(text)
        stem.with_suffix(".json").write_text(
            json.dumps({"args": vars(args), "meta": meta, "rows": table}, indent=1)
        )


if __name__ == "__main__":
    main()
