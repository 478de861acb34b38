"""The single-writer guarantee across real processes.

1. A worker frozen (SIGSTOP) mid-turn past its lease is taken over; when it is thawed, its
   put_writes and put are refused, the thread holds the new worker's state, and the history has
   no fork.
2. Two processes race on the same threads for many turns through ``ExclusiveGraph``: no two runs
   of a thread overlap, no fork, no lost turn.

Each runs with the lease in Redis, with Redis down (the lease falls back to the Postgres row),
and on a shared SQLite file (no Redis at all).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from langgraph_resilient import ResilientSaver
from tests.checkpoint.lease.graphs import check_linear, saver_kwargs, takeover_graph
from tests.conftest import (
    POSTGRES_URL,
    REDIS_URL,
    drop_prefixed_keys,
    drop_prefixed_tables,
    unique_prefix,
)
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[3]
MODES = ["redis", "redis-down", "sqlite"]


def spawn(args: dict[str, Any]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.checkpoint.lease.worker", json.dumps(args)], cwd=ROOT, env=env
    )


async def wait_file(
    path: Path, proc: subprocess.Popen[bytes], out: Path, timeout_s: float = 60
) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():  # noqa: ASYNC240 (a local file, polled)
        if proc.poll() is not None:
            pytest.fail(f"worker exited early: {out.read_text()}")  # noqa: ASYNC240
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        await asyncio.sleep(0.01)


async def finish(proc: subprocess.Popen[bytes], out: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while proc.poll() is None:
        assert time.monotonic() < deadline, "worker did not finish"
        await asyncio.sleep(0.02)
    result: dict[str, Any] = json.loads(out.read_text())  # noqa: ASYNC240
    assert "fatal" not in result, result.get("fatal")
    return result


@pytest.fixture
async def setup(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """Saver arguments for the test's mode, on a prefix of its own (dropped afterwards)."""
    mode = request.param
    prefix = unique_prefix()
    redis_url = {
        "redis": REDIS_URL,
        "redis-down": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens: refused
        "sqlite": None,
    }[mode]
    backend = "sqlite" if mode == "sqlite" else "postgres"
    kwargs = saver_kwargs(backend, prefix, POSTGRES_URL, str(tmp_path / "state.db"), redis_url)
    try:
        yield {"mode": mode, "saver": kwargs}
    finally:
        if backend == "postgres":
            await drop_prefixed_tables(POSTGRES_URL, prefix)
        if mode == "redis":
            await drop_prefixed_keys(REDIS_URL, prefix)


@pytest.mark.fault
@pytest.mark.parametrize("setup", MODES, indirect=True)
async def test_frozen_worker_is_fenced_out(setup: dict[str, Any], tmp_path: Path) -> None:
    thread_id = "frozen-thread"
    ttl_s = 1.0
    marker, out = tmp_path / "in_node", tmp_path / "w1.json"
    # The schema exists before worker 1 starts, so its startup cost is only imports.
    async with ResilientSaver.from_urls(**setup["saver"]):
        pass
    proc = spawn(
        {
            "mode": "stall",
            "saver": setup["saver"],
            "thread_id": thread_id,
            "ttl_s": ttl_s,
            "stall_s": 3.0,
            "marker": str(marker),
            "out": str(out),
        }
    )
    try:
        await wait_file(marker, proc, out)
        os.kill(proc.pid, signal.SIGSTOP)  # worker 1 is inside its first node, holding the lease
        await asyncio.sleep(ttl_s + 0.5)  # ... and stays frozen past the lease
        config = {"configurable": {"thread_id": thread_id, "worker": "w2"}}
        async with ResilientSaver.from_urls(**setup["saver"]) as saver:
            graph = takeover_graph().compile(checkpointer=saver)
            async with saver.lock_thread(thread_id, ttl_s=10, wait_s=10) as lease:
                # Worker 2 takes over and finishes the interrupted run.
                await graph.ainvoke(None, config, durability="sync")
                os.kill(proc.pid, signal.SIGCONT)  # thaw worker 1 while worker 2 still holds
                result = await finish(proc, out)
            state = await graph.aget_state(config)
            history = [(t.config, t.parent_config) async for t in saver.alist(config)]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.wait(timeout=10)

    assert lease.epoch > result["epoch"]
    assert result["error"] == "StaleLeaseError"
    calls = result["calls"]
    # Worker 1 wrote its turn's input before it froze; after the thaw it tried to write the
    # node's output and the next checkpoint, and both were refused.
    assert calls[0] == ["put", "ok"]
    assert ["put_writes", "StaleLeaseError"] in calls
    assert ["put", "StaleLeaseError"] in calls
    refused = next(i for i, (_, outcome) in enumerate(calls) if outcome != "ok")
    assert all(outcome == "StaleLeaseError" for _, outcome in calls[refused:])
    assert result["lost"], "worker 1's renewal should have noticed the takeover"
    # The thread holds worker 2's run, and its history is one chain.
    assert state.values["log"] == ["input:w1", "work:w2", "finish:w2"]
    assert check_linear(history) >= 4


@pytest.mark.fault
@pytest.mark.parametrize("setup", MODES, indirect=True)
async def test_two_processes_race_on_the_same_threads(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    threads = [f"race-{i}" for i in range(4)]
    turns = 8
    async with ResilientSaver.from_urls(**setup["saver"]):
        pass  # create the schema once
    outs = [tmp_path / f"race{i}.json" for i in range(2)]
    ready, go = [tmp_path / f"ready{i}" for i in range(2)], tmp_path / "go"
    procs = [
        spawn(
            {
                "mode": "race",
                "worker": f"w{i}",
                "saver": setup["saver"],
                "threads": threads,
                "turns": turns,
                "ttl_s": 5.0,
                "ready": str(ready[i]),
                "go": str(go),
                "out": str(out),
            }
        )
        for i, out in enumerate(outs)
    ]
    try:
        for proc, flag, out in zip(procs, ready, outs, strict=True):
            await wait_file(flag, proc, out)
        go.write_text("go")  # both start their turns at once
        results = [await finish(p, o) for p, o in zip(procs, outs, strict=True)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)

    for result in results:
        assert not result["errors"], result["errors"][0]
    runs: dict[str, list[tuple[float, float, str]]] = {t: [] for t in threads}
    for i, result in enumerate(results):
        for tid, start, end in result["intervals"]:
            runs[tid].append((start, end, f"w{i}"))
    interleaved = 0
    for tid, spans in runs.items():
        spans.sort()
        assert len(spans) == 2 * turns
        for (_, end, _), (start, _, _) in itertools.pairwise(spans):
            assert start >= end, f"{tid}: two runs overlapped"
        interleaved += sum(a[2] != b[2] for a, b in itertools.pairwise(spans))
    print(f"{interleaved} hand-overs between the two workers")
    assert interleaved >= 2 * len(threads), "the two workers hardly alternated on a thread"

    async with ResilientSaver.from_urls(**setup["saver"]) as saver:
        for tid in threads:
            config = {"configurable": {"thread_id": tid}}
            state = await saver.aget_tuple(config)
            assert state is not None
            done = state.checkpoint["channel_values"]["turns"]
            assert len(done) == 2 * turns and len(set(done)) == 2 * turns, "a turn was lost"
            check_linear([(t.config, t.parent_config) async for t in saver.alist(config)])
