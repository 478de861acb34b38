"""Side-by-side checkpoint saver benchmark: one LangGraph workload, every saver, one run.

Run it with::

    .venv/bin/python -m benchmarks.bench_checkpoint            # full default run (4-5 min)
    .venv/bin/python -m benchmarks.bench_checkpoint --quick    # smoke run (under a minute)

The workload is a 5-node chain ``StateGraph``: each node appends a small message to an
``Annotated[list, operator.add]`` channel and updates a few scalar keys. For every saver x
durability x concurrency cell, ``--threads`` threads each run ``--turns`` turns of ``ainvoke``
(every turn continues the same thread); ``--concurrency`` threads are in flight at once. The
wall time of every ``ainvoke`` is recorded; the report gives median and p95 ms per invocation,
throughput, and ratios against the official ``AsyncPostgresSaver`` and ``InMemorySaver``.

Savers are entries of :data:`SAVERS`: a name mapped to an async-context-manager factory. Adding
a variant (a tiered saver, a saver with a lease around each invocation) is one entry there.
See ``benchmarks/README.md`` for how to read the output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import gc
import importlib
import importlib.metadata
import json
import math
import operator
import os
import platform
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypedDict
from urllib.parse import urlsplit, urlunsplit

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

AnySaver = BaseCheckpointSaver[Any]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

# Savers every ratio is computed against (when they ran).
BASELINE_POSTGRES = "official-postgres"
BASELINE_MEMORY = "memory"

# ---------------------------------------------------------------------------------- workload

NODE_NAMES = ("plan", "retrieve", "reason", "draft", "review")
MESSAGES_PER_TURN = 1 + len(NODE_NAMES)  # the user's message plus one per node


class ChainState(TypedDict, total=False):
    """Small, realistic state: a growing message list and a few scalars."""

    messages: Annotated[list[dict[str, str]], operator.add]
    step: int
    last_node: str
    score: float


def _make_node(index: int, name: str) -> Any:
    async def node(state: ChainState) -> dict[str, Any]:
        step = state.get("step", 0) + 1
        return {
            "messages": [
                {"role": "assistant", "name": name, "content": f"{name}: result of step {step}"}
            ],
            "step": step,
            "last_node": name,
            "score": round(state.get("score", 0.0) + 0.1 * (index + 1), 3),
        }

    node.__name__ = name
    return node


def build_graph() -> StateGraph[ChainState]:
    """The 5-node chain every saver runs: START -> plan -> ... -> review -> END."""
    builder: StateGraph[ChainState] = StateGraph(ChainState)
    previous = START
    for index, name in enumerate(NODE_NAMES):
        builder.add_node(name, _make_node(index, name))
        builder.add_edge(previous, name)
        previous = name
    builder.add_edge(previous, END)
    return builder


def turn_input(turn: int) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"user message, turn {turn + 1}"}]}


# ---------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class BenchEnv:
    """What a saver factory may use: all of it is fresh and private to this run."""

    postgres_url: str | None
    """A database created for this run and dropped at its end (None: Postgres unavailable)."""
    redis_url: str
    tmpdir: Path
    run_id: str
    pool_size: int


SaverFactory = Callable[[BenchEnv], contextlib.AbstractAsyncContextManager[AnySaver]]
InvocationWrapper = Callable[[AnySaver, str], contextlib.AbstractAsyncContextManager[object]]


@dataclass(frozen=True)
class SaverSpec:
    """One column of the comparison."""

    label: str
    factory: SaverFactory
    description: str
    needs: frozenset[str] = frozenset()
    """Servers the factory needs ("postgres", "redis"); skipped with a note without them."""
    around_invocation: InvocationWrapper | None = None
    """Optional async context entered around every timed ``ainvoke`` (e.g. a thread lease)."""
    targets: dict[str, float] = field(default_factory=dict)
    """``{baseline saver name: max ratio of median ms}`` checked and reported as pass/fail."""


@contextlib.asynccontextmanager
async def _memory(env: BenchEnv) -> AsyncIterator[AnySaver]:
    yield InMemorySaver()


@contextlib.asynccontextmanager
async def _official_postgres(env: BenchEnv) -> AsyncIterator[AnySaver]:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    assert env.postgres_url is not None
    # The set-up the official docs give for a pool: autocommit, no prepared statements,
    # dict rows.
    async with AsyncConnectionPool(
        env.postgres_url,
        min_size=1,
        max_size=env.pool_size,
        open=False,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
    ) as pool:
        saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
        await saver.setup()
        yield saver


@contextlib.asynccontextmanager
async def _official_sqlite(env: BenchEnv) -> AsyncIterator[AnySaver]:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with AsyncSqliteSaver.from_conn_string(str(env.tmpdir / "official.sqlite")) as saver:
        await saver.setup()
        yield saver


@contextlib.asynccontextmanager
async def _official_redis(env: BenchEnv) -> AsyncIterator[AnySaver]:
    # In the `bench` extra. It needs the RediSearch and RedisJSON modules (Redis Stack): on a
    # plain Redis it fails to start, and the report shows its error in its row.
    from langgraph.checkpoint.redis.aio import AsyncRedisSaver

    async with AsyncRedisSaver.from_conn_string(
        env.redis_url,
        checkpoint_prefix=f"bench_{env.run_id}_checkpoint",
        checkpoint_write_prefix=f"bench_{env.run_id}_checkpoint_write",
    ) as saver:
        yield saver


def _saver_class(package: str) -> Any:
    """``ResilientSaver`` of this checkout (``langgraph_resilient``) or of another revision
    loaded by ``--compare`` (benchmarks/revision.py)."""
    return importlib.import_module(package).ResilientSaver


def _tag(package: str) -> str:
    """Keeps two versions' tables, files and keys apart: '' for this checkout."""
    return "" if package == "langgraph_resilient" else package.removeprefix("lgr_")[:6] + "_"


@contextlib.asynccontextmanager
async def _resilient_postgres(
    env: BenchEnv, package: str = "langgraph_resilient"
) -> AsyncIterator[AnySaver]:
    ResilientSaver = _saver_class(package)
    assert env.postgres_url is not None
    async with ResilientSaver.from_urls(
        postgres_url=env.postgres_url,
        prefix=f"bench_pg_{_tag(package)}",
        pool_max_size=env.pool_size,
    ) as saver:
        yield saver


@contextlib.asynccontextmanager
async def _resilient_sqlite(
    env: BenchEnv, package: str = "langgraph_resilient"
) -> AsyncIterator[AnySaver]:
    ResilientSaver = _saver_class(package)

    async with ResilientSaver.from_urls(
        sqlite_path=str(env.tmpdir / f"resilient{_tag(package)}.sqlite"),
        prefix=f"bench_lite_{_tag(package)}",
    ) as saver:
        yield saver


@contextlib.asynccontextmanager
async def _resilient_tiered(
    env: BenchEnv, package: str = "langgraph_resilient"
) -> AsyncIterator[AnySaver]:
    ResilientSaver = _saver_class(package)
    assert env.postgres_url is not None
    prefix = f"bench_tier_{env.run_id}_{_tag(package)}"
    try:
        async with ResilientSaver.from_urls(
            postgres_url=env.postgres_url,
            redis_url=env.redis_url,
            prefix=prefix,
            pool_max_size=env.pool_size,
            redis_required=True,
        ) as saver:
            yield saver
    finally:
        from redis.asyncio import Redis

        client = Redis.from_url(env.redis_url)
        try:
            async for key in client.scan_iter(match=f"{prefix}*", count=1000):
                await client.delete(key)
        finally:
            await client.aclose()


SAVERS: dict[str, SaverSpec] = {
    "memory": SaverSpec(
        "InMemorySaver",
        _memory,
        "langgraph.checkpoint.memory.InMemorySaver: in-process dict, the floor",
    ),
    "official-postgres": SaverSpec(
        "AsyncPostgresSaver (official)",
        _official_postgres,
        "langgraph-checkpoint-postgres AsyncPostgresSaver on a psycopg AsyncConnectionPool",
        needs=frozenset({"postgres"}),
    ),
    "official-sqlite": SaverSpec(
        "AsyncSqliteSaver (official)",
        _official_sqlite,
        "langgraph-checkpoint-sqlite AsyncSqliteSaver (aiosqlite) on a temp file",
    ),
    "official-redis": SaverSpec(
        "AsyncRedisSaver (official)",
        _official_redis,
        "langgraph-checkpoint-redis AsyncRedisSaver; needs Redis Stack (RediSearch, RedisJSON)",
        needs=frozenset({"redis"}),
    ),
    "resilient-postgres": SaverSpec(
        "ResilientSaver Postgres",
        _resilient_postgres,
        "ResilientSaver.from_urls(postgres_url=...): asyncpg, durable tier only",
        needs=frozenset({"postgres"}),
        targets={BASELINE_POSTGRES: 1.0},
    ),
    "resilient-sqlite": SaverSpec(
        "ResilientSaver SQLite",
        _resilient_sqlite,
        "ResilientSaver.from_urls(sqlite_path=...): embedded SQLite file",
        targets={"official-sqlite": 1.0},
    ),
    "resilient-tiered": SaverSpec(
        "ResilientSaver L1+Redis+Postgres",
        _resilient_tiered,
        "ResilientSaver.from_urls(postgres_url=..., redis_url=...): in-process cache and Redis "
        "over Postgres",
        needs=frozenset({"postgres", "redis"}),
        targets={BASELINE_POSTGRES: 0.4, BASELINE_MEMORY: 1.5},
    ),
    # Adding a variant is one entry here; this one reuses a factory and holds the thread's
    # lease around every timed ainvoke (compare its median with resilient-tiered's).
    "resilient-tiered-lease": SaverSpec(
        "ResilientSaver tiered + lease",
        _resilient_tiered,
        "tiered saver, saver.lock_thread(thread_id) held around each invocation",
        needs=frozenset({"postgres", "redis"}),
        around_invocation=lambda saver, thread_id: saver.lock_thread(thread_id, ttl_s=30.0),
    ),
}


# ---------------------------------------------------------------------------------- running


class BenchmarkError(RuntimeError):
    """An invocation failed or returned the wrong state."""


@dataclass
class CellRun:
    """One saver x durability x concurrency x repeat."""

    latencies_ms: list[float]
    wall_s: float


@dataclass
class ActiveSaver:
    name: str
    spec: SaverSpec
    saver: AnySaver
    graph: Any


async def run_cell(
    active: ActiveSaver,
    *,
    tag: str,
    threads: int,
    turns: int,
    concurrency: int,
    durability: str,
    collect: bool = True,
) -> CellRun:
    """``threads`` threads x ``turns`` turns, ``concurrency`` threads in flight at once."""
    semaphore = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    wrapper = active.spec.around_invocation

    async def one_thread(index: int) -> None:
        thread_id = f"{tag}-t{index}"
        config = {"configurable": {"thread_id": thread_id}}
        async with semaphore:
            for turn in range(turns):
                started = time.perf_counter()
                if wrapper is None:
                    out = await active.graph.ainvoke(
                        turn_input(turn), config, durability=durability
                    )
                else:
                    async with wrapper(active.saver, thread_id):
                        out = await active.graph.ainvoke(
                            turn_input(turn), config, durability=durability
                        )
                latencies.append((time.perf_counter() - started) * 1000.0)
                expected = (turn + 1) * MESSAGES_PER_TURN
                if len(out["messages"]) != expected:
                    raise BenchmarkError(
                        f"thread {thread_id} turn {turn + 1}: {len(out['messages'])} messages, "
                        f"expected {expected}: the saver lost or duplicated state"
                    )

    if collect:
        gc.collect()
    started = time.perf_counter()
    results = await asyncio.gather(*(one_thread(i) for i in range(threads)), return_exceptions=True)
    wall = time.perf_counter() - started
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return CellRun(latencies, wall)


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


async def _redis_has_search(url: str) -> bool | None:
    """Whether the Redis server has the search module (None: could not tell)."""
    try:
        from redis.asyncio import Redis
    except ImportError:
        return None
    client = Redis.from_url(url, socket_connect_timeout=2)
    try:
        modules = await client.module_list()
    except Exception:
        return None
    finally:
        await client.aclose()
    names = set()
    for module in modules:
        name = module.get(b"name", module.get("name", b""))
        names.add((name.decode() if isinstance(name, bytes) else str(name)).lower())
    return any("search" in name or name == "ft" for name in names)


async def _reachable_redis(url: str) -> str | None:
    """None when Redis answers PING, else the error."""
    try:
        from redis.asyncio import Redis
    except ImportError as exc:
        return _error_text(exc)
    client = Redis.from_url(url, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as exc:
        return _error_text(exc)
    finally:
        await client.aclose()
    return None


@contextlib.asynccontextmanager
async def fresh_postgres_database(admin_url: str, run_id: str, keep: bool) -> AsyncIterator[str]:
    """Create ``bench_<run_id>`` next to ``admin_url``'s database; drop it on the way out."""
    import psycopg

    name = f"bench_{run_id}"
    async with await psycopg.AsyncConnection.connect(
        admin_url, autocommit=True, connect_timeout=5
    ) as conn:
        await conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin_url)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        if not keep:
            async with await psycopg.AsyncConnection.connect(
                admin_url, autocommit=True, connect_timeout=5
            ) as conn:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _server_version(url: str) -> str | None:
    import psycopg

    try:
        async with await psycopg.AsyncConnection.connect(url, connect_timeout=5) as conn:
            cur = await conn.execute("SHOW server_version")
            row = await cur.fetchone()
            return str(row[0]) if row else None
    except Exception:
        return None


# ---------------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def summarize(runs: list[CellRun]) -> dict[str, Any]:
    latencies = [x for run in runs for x in run.latencies_ms]
    wall = sum(run.wall_s for run in runs)
    return {
        "invocations": len(latencies),
        "median_ms": statistics.median(latencies),
        "p95_ms": percentile(latencies, 95),
        "mean_ms": statistics.fmean(latencies),
        "min_ms": min(latencies),
        "max_ms": max(latencies),
        "throughput_per_s": len(latencies) / wall if wall > 0 else float("nan"),
        "wall_ms_per_invocation": wall * 1000.0 / len(latencies),
        "repeat_medians_ms": [statistics.median(run.latencies_ms) for run in runs],
        "wall_s": wall,
    }


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base <= 0:
        return None
    return value / base


def add_ratios(cells: dict[str, dict[str, Any]], savers: dict[str, SaverSpec]) -> None:
    """Attach ``vs_*`` ratios and target checks to every saver's stats of one cell."""
    pg = cells.get(BASELINE_POSTGRES)
    mem = cells.get(BASELINE_MEMORY)
    for name, stats in cells.items():
        stats["median_vs_official_postgres"] = _ratio(
            stats["median_ms"], pg["median_ms"] if pg else None
        )
        stats["median_vs_memory"] = _ratio(stats["median_ms"], mem["median_ms"] if mem else None)
        stats["throughput_vs_official_postgres"] = _ratio(
            stats["throughput_per_s"], pg["throughput_per_s"] if pg else None
        )
        checks = []
        for baseline, limit in savers[name].targets.items():
            base = cells.get(baseline)
            ratio = _ratio(stats["median_ms"], base["median_ms"] if base else None)
            checks.append(
                {
                    "baseline": baseline,
                    "max_ratio": limit,
                    "ratio": ratio,
                    "passed": None if ratio is None else ratio <= limit,
                }
            )
        stats["targets"] = checks


# ---------------------------------------------------------------------------------- report


def _fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}{suffix}"


def render_markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    args = meta["args"]
    load = meta["load_average_1m"]
    lines: list[str] = []
    lines.append(f"# Checkpoint saver benchmark, {meta['started_at'][:10]}")
    lines.append("")
    lines.append(
        f"5-node chain `StateGraph`, {args['threads']} threads x {args['turns']} turns per cell, "
        f"{args['repeats']} repeat(s), interleaved in random order (seed {meta['seed']}). "
        "Times are wall ms per `ainvoke`, pooled over repeats."
    )
    lines.append("")
    lines.append(
        f"Command: `{meta['command']}`  \n"
        f"Machine: {meta['machine']['cpus']} CPUs, {meta['machine']['platform']}, "
        f"Python {meta['machine']['python']}, Postgres {meta['postgres_server_version']}  \n"
        f"Commit: {meta['git_commit']}{' (dirty tree)' if meta['git_dirty'] else ''}; "
        f"run took {meta['duration_s']:.0f} s; 1-min load average "
        f"{load['before']:.2f} before, {load['after']:.2f} after"
    )
    lines.append("")

    names = [n for n in report["savers"] if report["savers"][n]["status"] == "ok"]
    labels = {n: report["savers"][n]["label"] for n in report["savers"]}

    # Summary: median ratio vs the official Postgres saver in every cell.
    cells = report["cells"]
    if cells:
        lines.append("## Summary: median ms per invocation (ratio vs official AsyncPostgresSaver)")
        lines.append("")
        header = ["saver"] + [f"{c['durability']}, c={c['concurrency']}" for c in cells]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for name in names:
            row = [labels[name]]
            for cell in cells:
                stats = cell["savers"].get(name)
                if stats is None:
                    row.append("failed" if name in cell.get("errors", {}) else "-")
                    continue
                ratio = stats["median_vs_official_postgres"]
                row.append(f"{_fmt(stats['median_ms'])} ({_fmt(ratio, suffix='x')})")
            lines.append("| " + " | ".join(row) + " |")
        # A saver that did not start keeps its row, with why (e.g. the official Redis saver's
        # error on a Redis without modules), so the table shows every saver that was asked for.
        for name, info in report["savers"].items():
            if info["status"] != "ok":
                lines.append(f"| {labels[name]} | {info['status']} |" + " |" * (len(cells) - 1))
        lines.append("")

    for cell in cells:
        lines.append(f"## durability={cell['durability']}, concurrency={cell['concurrency']}")
        lines.append("")
        lines.append(
            "| saver | median ms | p95 ms | inv/s | median vs official PG | median vs InMemory "
            "| inv/s vs official PG | repeat medians ms |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|---|")
        for name in names:
            stats = cell["savers"].get(name)
            if stats is None:
                err = cell.get("errors", {}).get(name, "not run")
                lines.append(f"| {labels[name]} | failed: {err} | | | | | | |")
                continue
            medians = ", ".join(f"{m:.2f}" for m in stats["repeat_medians_ms"])
            lines.append(
                f"| {labels[name]} | {_fmt(stats['median_ms'])} | {_fmt(stats['p95_ms'])} "
                f"| {_fmt(stats['throughput_per_s'], 0)} "
                f"| {_fmt(stats['median_vs_official_postgres'], suffix='x')} "
                f"| {_fmt(stats['median_vs_memory'], suffix='x')} "
                f"| {_fmt(stats['throughput_vs_official_postgres'], suffix='x')} "
                f"| {medians} |"
            )
        lines.append("")

    target_lines = []
    for cell in cells:
        for name in names:
            stats = cell["savers"].get(name)
            for check in (stats or {}).get("targets", []):
                verdict = {True: "pass", False: "FAIL", None: "n/a"}[check["passed"]]
                baseline = labels.get(check["baseline"], check["baseline"])
                target_lines.append(
                    f"| {labels[name]} | {cell['durability']}, c={cell['concurrency']} "
                    f"| median <= {check['max_ratio']}x {baseline} "
                    f"| {_fmt(check['ratio'], suffix='x')} | {verdict} |"
                )
    if target_lines:
        lines.append("## Targets")
        lines.append("")
        lines.append("| saver | cell | target | ratio | verdict |")
        lines.append("|---|---|---|---:|---|")
        lines.extend(target_lines)
        lines.append("")

    if args.get("compare"):
        lines.extend(comparison_lines(report, args["compare"]))

    lines.append("## Savers")
    lines.append("")
    for name, info in report["savers"].items():
        status = info["status"]
        text = "ran" if status == "ok" else status
        lines.append(f"- `{name}` ({info['label']}): {info['description']}. **{text}**")
    lines.append("")
    notes = meta.get("notes") or []
    if notes:
        lines.append("## Notes")
        lines.append("")
        lines.extend(f"- {note}" for note in notes)
        lines.append("")
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    lines.append(f"Versions: {versions}.")
    lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- metadata


def _versions() -> dict[str, str]:
    out = {}
    for dist in (
        "langgraph",
        "langgraph-checkpoint",
        "langgraph-checkpoint-postgres",
        "langgraph-checkpoint-sqlite",
        "langgraph-checkpoint-redis",
        "langgraph-resilient",
        "psycopg",
        "psycopg-pool",
        "asyncpg",
        "aiosqlite",
        "redis",
    ):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", *args],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _dirty_tree() -> bool:
    """Whether the checkout differs from its commit, outside ``benchmarks/results``: the files
    a run writes there (and earlier runs wrote) are outputs, not changes to what is measured."""
    results = RESULTS_DIR.relative_to(Path(__file__).resolve().parent)
    return bool(_git("status", "--porcelain", "--", ":/", f":(exclude){results}"))


# ---------------------------------------------------------------------------------- main


@dataclass
class Options:
    threads: int
    turns: int
    concurrency: list[int]
    durability: list[str]
    repeats: int
    savers: list[str]
    postgres_url: str
    redis_url: str
    pool_size: int
    seed: int
    warmup_turns: int
    out_dir: Path | None
    keep_db: bool
    quick: bool
    profile: str | None
    profile_out: Path | None
    compare: str | None = None


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _str_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_checkpoint",
        description="Side-by-side LangGraph checkpoint saver benchmark (one run, all savers).",
    )
    parser.add_argument("--threads", type=int, help="threads per cell (default 30; quick 10)")
    parser.add_argument("--turns", type=int, help="ainvoke turns per thread (default 4; quick 3)")
    parser.add_argument(
        "--concurrency", type=_int_list, default=[1, 32], help="threads in flight, e.g. 1,32"
    )
    parser.add_argument(
        "--durability",
        type=_str_list,
        default=["async", "sync"],
        help="LangGraph durability modes: any of exit,async,sync",
    )
    parser.add_argument("--repeats", type=int, help="repeats per cell (default 8; quick 2)")
    parser.add_argument(
        "--savers",
        type=_str_list,
        default=list(SAVERS),
        help=f"comma-separated registry names (default all: {','.join(SAVERS)})",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="admin URL; a fresh database bench_<id> is created next to it and dropped after",
    )
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    parser.add_argument("--pool-size", type=int, default=10, help="max Postgres pool size, both")
    parser.add_argument("--seed", type=int, help="order shuffling seed (default random)")
    parser.add_argument("--warmup-turns", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--no-write", action="store_true", help="print only, write no files")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the bench database")
    parser.add_argument("--quick", action="store_true", help="small run for a smoke test (<1 min)")
    parser.add_argument(
        "--profile",
        metavar="SAVER",
        help="profile one saver with pyinstrument (concurrency 1) instead of benchmarking",
    )
    parser.add_argument("--profile-out", type=Path, help="write the pyinstrument text report here")
    parser.add_argument(
        "--compare",
        metavar="REV",
        help="also run the ResilientSaver variants of git revision REV side by side (before/"
        "after a change, in one run); the report compares each with this checkout's",
    )
    ns = parser.parse_args(argv)

    unknown = [s for s in ns.savers if s not in SAVERS]
    if ns.profile and ns.profile not in SAVERS:
        unknown.append(ns.profile)
    if unknown:
        parser.error(f"unknown saver(s) {unknown}; known: {', '.join(SAVERS)}")
    bad = [d for d in ns.durability if d not in ("exit", "async", "sync")]
    if bad:
        parser.error(f"unknown durability {bad}; use exit, async, sync")
    quick = ns.quick
    return Options(
        threads=ns.threads or (10 if quick else 30),
        turns=ns.turns or (3 if quick else 4),
        concurrency=ns.concurrency,
        durability=ns.durability,
        repeats=ns.repeats or (2 if quick else 8),
        savers=[ns.profile] if ns.profile else ns.savers,
        postgres_url=ns.postgres_url,
        redis_url=ns.redis_url,
        pool_size=ns.pool_size,
        seed=ns.seed if ns.seed is not None else secrets.randbelow(2**31),
        warmup_turns=ns.warmup_turns,
        out_dir=None if ns.no_write else ns.out_dir,
        keep_db=ns.keep_db,
        quick=quick,
        profile=ns.profile,
        profile_out=ns.profile_out,
        compare=ns.compare,
    )


def add_revision(opts: Options) -> None:
    """``--compare REV``: a twin of each selected ResilientSaver variant, running REV's code."""
    if opts.compare is None:
        return
    from benchmarks.revision import import_revision

    package = import_revision(opts.compare)
    for name in [n for n in opts.savers if n.startswith("resilient-")]:
        spec = SAVERS[name]
        twin = f"{name}@{opts.compare}"
        SAVERS[twin] = SaverSpec(
            f"{spec.label} @{opts.compare}",
            functools.partial(spec.factory, package=package),  # type: ignore[call-arg]
            f"{spec.description}, at revision {opts.compare}",
            needs=spec.needs,
            around_invocation=spec.around_invocation,
        )
        opts.savers.append(twin)


def comparison_lines(report: dict[str, Any], rev: str) -> list[str]:
    """Each ResilientSaver variant against its twin at ``rev``, cell by cell, with the run's
    own noise: the largest distance of a repeat's median from the pooled median, in % of it,
    for either of the two. A change within that is indistinguishable from noise."""
    lines = [
        f"## This checkout against {rev}",
        "",
        "| saver | cell | median ms now | median ms at rev | now / rev | noise (±%) | verdict |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for cell in report["cells"]:
        for name, stats in cell["savers"].items():
            before = cell["savers"].get(f"{name}@{rev}")
            if before is None:
                continue
            ratio = stats["median_ms"] / before["median_ms"]

            def spread(s: dict[str, Any]) -> float:
                med = s["median_ms"]
                return max(abs(m - med) for m in s["repeat_medians_ms"]) / med

            noise = max(spread(stats), spread(before))
            verdict = "slower" if ratio - 1 > noise else "faster" if 1 - ratio > noise else "same"
            lines.append(
                f"| {report['savers'][name]['label']} | {cell['durability']}, "
                f"c={cell['concurrency']} | {_fmt(stats['median_ms'])} "
                f"| {_fmt(before['median_ms'])} | {_fmt(ratio, 3, 'x')} | {noise * 100:.1f} "
                f"| {verdict} |"
            )
    lines.append("")
    return lines


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def open_savers(
    stack: contextlib.AsyncExitStack,
    opts: Options,
    env: BenchEnv,
    servers: dict[str, str | None],
    statuses: dict[str, str],
    notes: list[str],
) -> dict[str, ActiveSaver]:
    """Enter every selected saver; a saver that cannot start is recorded, not fatal."""
    builder = build_graph()
    active: dict[str, ActiveSaver] = {}
    for name in opts.savers:
        spec = SAVERS[name]
        missing = [s for s in sorted(spec.needs) if servers.get(s)]
        if missing:
            statuses[name] = "skipped: " + "; ".join(
                f"{s} unavailable ({servers[s]})" for s in missing
            )
            continue
        try:
            saver = await stack.enter_async_context(spec.factory(env))
        except ImportError as exc:
            statuses[name] = f"not installed ({_error_text(exc)})"
            continue
        except Exception as exc:
            statuses[name] = await _start_failure(name, spec, exc, opts)
            continue
        active[name] = ActiveSaver(name, spec, saver, builder.compile(checkpointer=saver))
        statuses[name] = "ok"
    if "official-sqlite" in active:
        saver = active["official-sqlite"].saver
        with contextlib.suppress(Exception):
            async with saver.conn.execute("PRAGMA synchronous") as cur:  # type: ignore[attr-defined]
                row = await cur.fetchone()
            notes.append(
                f"Official AsyncSqliteSaver runs with PRAGMA synchronous={row[0]} "
                "(0 OFF, 1 NORMAL, 2 FULL) in WAL mode; ResilientSaver SQLite with its default "
                "synchronous=FULL."
            )
    return active


async def _start_failure(name: str, spec: SaverSpec, exc: Exception, opts: Options) -> str:
    text = _error_text(exc)
    if "redis" in spec.needs:
        has_search = await _redis_has_search(opts.redis_url)
        if has_search is False:
            return f"fails on plain Redis: {text}"
    return f"failed to start: {text}"


async def warm_up(active: dict[str, ActiveSaver], opts: Options, statuses: dict[str, str]) -> None:
    """Open pool connections, prepare statements, fill caches: nothing here is timed."""
    width = min(opts.threads, max(opts.concurrency))
    for name in list(active):
        try:
            for durability in opts.durability:
                await run_cell(
                    active[name],
                    tag=f"warmup-{name}-{durability}",
                    threads=width,
                    turns=opts.warmup_turns,
                    concurrency=width,
                    durability=durability,
                )
        except Exception as exc:
            statuses[name] = f"failed in warm-up: {_error_text(exc)}"
            log(f"  {name}: warm-up failed: {_error_text(exc)}")
            del active[name]


async def benchmark(
    active: dict[str, ActiveSaver], opts: Options, statuses: dict[str, str]
) -> list[dict[str, Any]]:
    rng = random.Random(opts.seed)
    cell_keys = [(d, c) for d in opts.durability for c in opts.concurrency]
    runs: dict[tuple[str, int], dict[str, list[CellRun]]] = {k: {} for k in cell_keys}
    errors: dict[tuple[str, int], dict[str, str]] = {k: {} for k in cell_keys}
    total = opts.repeats * len(cell_keys)
    done = 0
    for repeat in range(opts.repeats):
        order = cell_keys[:]
        rng.shuffle(order)
        for durability, concurrency in order:
            done += 1
            savers = [n for n in active if n not in errors[(durability, concurrency)]]
            rng.shuffle(savers)
            parts = []
            for name in savers:
                try:
                    run = await run_cell(
                        active[name],
                        tag=f"r{repeat}-{durability}-c{concurrency}-{name}",
                        threads=opts.threads,
                        turns=opts.turns,
                        concurrency=concurrency,
                        durability=durability,
                    )
                except Exception as exc:
                    errors[(durability, concurrency)][name] = _error_text(exc)
                    log(f"  {name} failed: {_error_text(exc)}")
                    continue
                runs[(durability, concurrency)].setdefault(name, []).append(run)
                parts.append(f"{name}={statistics.median(run.latencies_ms):.2f}")
            log(
                f"[{done}/{total}] repeat {repeat + 1} durability={durability} "
                f"c={concurrency}: " + " ".join(parts)
            )
    cells = []
    for durability, concurrency in cell_keys:
        stats = {
            name: summarize(runs[(durability, concurrency)][name])
            for name in active
            if name in runs[(durability, concurrency)]
            and name not in errors[(durability, concurrency)]
        }
        add_ratios(stats, SAVERS)
        cells.append(
            {
                "durability": durability,
                "concurrency": concurrency,
                "savers": stats,
                "errors": errors[(durability, concurrency)],
            }
        )
    return cells


async def profile(active: dict[str, ActiveSaver], opts: Options) -> None:
    """Run the concurrency-1 cells of one saver under pyinstrument and print its hotspots.

    The profiler samples the event loop thread (``async_mode="disabled"``): time in a function
    is CPU spent there (and in what it calls); time in ``epoll.poll`` is the loop idle, waiting
    for the database.
    """
    try:
        from pyinstrument import Profiler
    except ImportError:
        log("pyinstrument is not installed: .venv/bin/pip install pyinstrument")
        raise SystemExit(2) from None
    (name,) = active
    gc.collect()
    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    for durability in opts.durability:
        await run_cell(
            active[name],
            tag=f"profile-{durability}",
            threads=opts.threads,
            turns=opts.turns,
            concurrency=1,
            durability=durability,
            collect=False,
        )
    session = profiler.stop()
    root = session.root_frame()
    invocations = opts.threads * opts.turns * len(opts.durability)
    print(f"# pyinstrument: {name}, concurrency 1, durability {','.join(opts.durability)}")
    print(
        f"{invocations} invocations in {session.duration:.2f} s sampled "
        f"({1000 * session.duration / invocations:.2f} ms per invocation under the profiler), "
        f"CPU {session.cpu_time:.2f} s"
    )
    if root is not None:
        print()
        print("## Where the event loop thread's time goes (self time by package)")
        print()
        print(package_table(root))
        print()
        print("## Functions of langgraph_resilient (inclusive = with callees, self = own code)")
        print()
        print(hotspot_table(root, "langgraph_resilient"))
    if opts.profile_out:
        opts.profile_out.parent.mkdir(parents=True, exist_ok=True)
        opts.profile_out.write_text(profiler.output_text(unicode=False, color=False))
        log(f"pyinstrument report written to {opts.profile_out}")


def _package_of(path: str) -> str | None:
    if "/site-packages/" in path:
        return path.split("/site-packages/", 1)[1].split("/", 1)[0]
    for marker in ("langgraph_resilient", "benchmarks"):
        if f"/{marker}/" in path:
            return marker
    if path.startswith("<"):
        return None  # built-in: charged to the caller's package
    return "python stdlib"


def package_table(root: Any) -> str:
    """Self time grouped by the package of the frame (built-ins charged to their caller)."""
    totals: dict[str, float] = {}
    total = root.time or 1.0

    def walk(frame: Any, inherited: str) -> None:
        if frame.is_synthetic:
            return  # [self]/[await] leaves: already in the parent's total_self_time
        package = _package_of(frame.file_path or "") or inherited
        if frame.function.endswith("poll") and (frame.file_path or "<").startswith("<"):
            package = "idle: epoll (waiting on I/O)"
        totals[package] = totals.get(package, 0.0) + frame.total_self_time
        for child in frame.children:
            walk(child, package)

    walk(root, "python stdlib")
    out = ["| package | self % |", "|---|---:|"]
    for package, value in sorted(totals.items(), key=lambda kv: kv[1], reverse=True):
        if value / total >= 0.005:
            out.append(f"| {package} | {100 * value / total:.1f} |")
    return "\n".join(out)


def hotspot_table(root: Any, package: str, top: int = 15) -> str:
    """Functions of ``package`` by inclusive and self time, as % of the sampled total."""
    inclusive: dict[str, float] = {}
    own: dict[str, float] = {}
    total = root.time or 1.0
    marker = f"/{package}/"

    def key_of(frame: Any) -> str | None:
        path = frame.file_path or ""
        if marker not in path:
            return None
        return f"{package}/{path.split(marker, 1)[1]}:{frame.function}"

    def walk(frame: Any, ancestors: frozenset[str]) -> None:
        if frame.is_synthetic:
            return
        key = key_of(frame)
        if key is not None:
            own[key] = own.get(key, 0.0) + frame.total_self_time
            if key not in ancestors:
                inclusive[key] = inclusive.get(key, 0.0) + frame.time
                ancestors = ancestors | {key}
        for child in frame.children:
            walk(child, ancestors)

    walk(root, frozenset())
    rows = sorted(inclusive.items(), key=lambda kv: kv[1], reverse=True)[:top]
    out = ["| function | inclusive % | self % |", "|---|---:|---:|"]
    for key, value in rows:
        out.append(f"| {key} | {100 * value / total:.1f} | {100 * own.get(key, 0.0) / total:.1f} |")
    return "\n".join(out)


async def main_async(opts: Options) -> dict[str, Any] | None:
    started_at = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    run_id = secrets.token_hex(4)
    load_before = os.getloadavg()
    notes: list[str] = []
    statuses: dict[str, str] = {}
    tmpdir = Path(tempfile.mkdtemp(prefix=f"bench_{run_id}_"))

    needs = {need for name in opts.savers for need in SAVERS[name].needs}
    servers: dict[str, str | None] = {}  # name -> None when usable, else the error
    pg_version = None
    async with contextlib.AsyncExitStack() as stack:
        postgres_url = None
        if "postgres" in needs:
            try:
                postgres_url = await stack.enter_async_context(
                    fresh_postgres_database(opts.postgres_url, run_id, opts.keep_db)
                )
                servers["postgres"] = None
                pg_version = await _server_version(postgres_url)
            except Exception as exc:
                servers["postgres"] = _error_text(exc)
        if "redis" in needs:
            servers["redis"] = await _reachable_redis(opts.redis_url)
        env = BenchEnv(postgres_url, opts.redis_url, tmpdir, run_id, opts.pool_size)
        try:
            log(f"run {run_id}: opening savers {', '.join(opts.savers)}")
            active = await open_savers(stack, opts, env, servers, statuses, notes)
            for name, status in statuses.items():
                if status != "ok":
                    log(f"  {name}: {status}")
            log("warming up")
            await warm_up(active, opts, statuses)
            if opts.profile:
                if not active:
                    log(f"{opts.profile} did not start: {statuses}")
                    raise SystemExit(1)
                await profile(active, opts)
                return None
            cells = await benchmark(active, opts, statuses)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)

    notes.append(
        f"Postgres pools: max {opts.pool_size} connections for both Postgres savers; each "
        "saver runs in its own fresh tables of a database created for this run."
    )
    notes.append("Every timed turn checks that the returned state has all earlier turns' messages.")
    argv = " ".join(sys.argv[1:])
    return {
        "meta": {
            "started_at": started_at.isoformat(timespec="seconds"),
            "duration_s": time.perf_counter() - t0,
            "command": f".venv/bin/python -m benchmarks.bench_checkpoint {argv}".strip(),
            "args": {
                "threads": opts.threads,
                "turns": opts.turns,
                "concurrency": opts.concurrency,
                "durability": opts.durability,
                "repeats": opts.repeats,
                "savers": opts.savers,
                "pool_size": opts.pool_size,
                "warmup_turns": opts.warmup_turns,
                "quick": opts.quick,
                "compare": opts.compare,
            },
            "seed": opts.seed,
            "workload": {
                "graph": "5-node chain StateGraph: " + " -> ".join(NODE_NAMES),
                "state": "messages: Annotated[list[dict], operator.add]; step, last_node, score",
                "messages_per_turn": MESSAGES_PER_TURN,
            },
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            "load_average_1m": {"before": load_before[0], "after": os.getloadavg()[0]},
            "postgres_server_version": pg_version,
            "git_commit": _git("rev-parse", "--short", "HEAD"),
            "git_dirty": _dirty_tree(),
            "versions": _versions(),
            "notes": notes,
        },
        "savers": {
            name: {
                "label": SAVERS[name].label,
                "description": SAVERS[name].description,
                "status": statuses.get(name, "not run"),
            }
            for name in opts.savers
        },
        "cells": cells,
    }


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    add_revision(opts)
    try:
        report = asyncio.run(main_async(opts))
    except KeyboardInterrupt:
        return 130
    except Exception:
        traceback.print_exc()
        return 1
    if report is None:
        return 0
    markdown = render_markdown(report)
    print(markdown)
    if opts.out_dir is not None:
        opts.out_dir.mkdir(parents=True, exist_ok=True)
        stem = f"checkpoint-{report['meta']['started_at'][:10]}" + ("-quick" if opts.quick else "")
        (opts.out_dir / f"{stem}.md").write_text(markdown)
        (opts.out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
        log(f"wrote {opts.out_dir / stem}.md and .json")
    failed = any(
        info["status"] != "ok" and "redis" not in SAVERS[name].needs
        for name, info in report["savers"].items()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
