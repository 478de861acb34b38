"""SIGTERM during runs: unready at once, new runs 503 with Retry-After, in-flight runs finish
(or stop at a checkpoint after the grace period), leases released, exit code 0."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from langgraph_resilient import ResilientSaver
from tests.conftest import POSTGRES_URL, REDIS_URL, drop_backend, unique_prefix
from tests.server.conftest import ServeProcess, backend_args, sdk

pytestmark = pytest.mark.timeout(180)


async def _watch_ready(url: str, until: asyncio.Event, seen: list[tuple[float, str, int]]) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        while not until.is_set():
            try:
                response = await http.get("/ready", timeout=1.0)
                seen.append((time.monotonic(), "ready", response.status_code))
            except httpx.HTTPError:
                seen.append((time.monotonic(), "ready", -1))
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("grace", [30.0, 0.5], ids=["finish", "stop_at_checkpoint"])
async def test_sigterm_during_runs(tmp_path: Path, grace: float) -> None:
    prefix = unique_prefix()
    server = ServeProcess(
        *backend_args("tiered", prefix, tmp_path),
        "--drain-grace-s",
        str(grace),
        log=tmp_path / "serve.log",
    ).start()
    try:
        client = sdk(server.url)
        threads = [(await client.threads.create())["thread_id"] for _ in range(3)]
        runs = [
            asyncio.create_task(
                client.runs.wait(t, "slow", input={"delay": 1.0}, raise_error=False)
            )
            for t in threads
        ]
        await asyncio.sleep(0.5)  # every run is in its first step
        stop = asyncio.Event()
        seen: list[tuple[float, str, int]] = []
        watcher = asyncio.create_task(_watch_ready(server.url, stop, seen))
        await asyncio.sleep(0.1)
        server.sigterm()
        refused_at = None
        async with httpx.AsyncClient(base_url=server.url) as http:
            for _ in range(100):
                await asyncio.sleep(0.05)
                response = await http.post(
                    f"/threads/{threads[0]}/runs/wait", json={"assistant_id": "slow"}
                )
                if response.status_code == 503:
                    refused_at = time.monotonic()
                    assert int(response.headers["retry-after"]) > 0
                    break
        assert refused_at is not None
        results = await asyncio.gather(*runs)
        stop.set()
        await watcher
        unready = [t for t, _, status in seen if status == 503]
        assert unready and min(unready) <= refused_at  # unready before the first refusal
        assert await asyncio.to_thread(server.wait, 60) == 0
        if grace > 10:
            assert all(r["log"] == ["first", "second", "third"] for r in results), results
        else:
            # Stopped at a step boundary: a prefix of the steps, each one checkpointed.
            for r in results:
                assert r["log"] in (["first"], ["first", "second"]), results
        async with ResilientSaver.from_urls(
            postgres_url=POSTGRES_URL, redis_url=REDIS_URL, prefix=prefix
        ) as saver:
            for thread_id in threads:
                async with saver.lock_thread(thread_id, wait_s=0):  # no lease left behind
                    pass
                head = await saver.aget_tuple({"configurable": {"thread_id": thread_id}})
                assert head is not None
                expected = ["first", "second", "third"] if grace > 10 else None
                log = head.checkpoint["channel_values"].get("log")
                if expected:
                    assert log == expected
                else:
                    assert log in (["first"], ["first", "second"])
    finally:
        server.stop()
        await drop_backend("tiered", prefix)
