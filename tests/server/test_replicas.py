"""Two server processes over one Postgres and one Redis: any replica serves any thread, a
thread runs on one replica at a time, and its history never forks."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import ServeProcess, sdk, serving

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServeProcess]]:
    tmp: Path = tmp_path_factory.mktemp("replicas")
    yield from serving("tiered", tmp, "--enqueue-wait-s", "30", count=2)


async def _linear(client: object, thread_id: str) -> list[dict]:
    history = await client.threads.get_history(thread_id, limit=200)  # type: ignore[attr-defined]
    ids = [h["checkpoint"]["checkpoint_id"] for h in history]
    assert len(ids) == len(set(ids))
    for newer, older in itertools.pairwise(history):
        assert newer["parent_checkpoint"]["checkpoint_id"] == older["checkpoint"]["checkpoint_id"]
    assert history[-1]["parent_checkpoint"] is None
    return history


async def test_turns_alternate_between_replicas(replicas: list[ServeProcess]) -> None:
    a, b = sdk(replicas[0].url), sdk(replicas[1].url)
    tid = (await a.threads.create(metadata={"alternating": True}))["thread_id"]
    expected = 0
    for turn in range(6):
        client = (a, b)[turn % 2]
        result = await client.runs.wait(tid, "chain", input={"n": expected})
        expected += 5
        assert result == {"n": expected}
        other = (b, a)[turn % 2]
        assert (await other.threads.get_state(tid))["values"] == {"n": expected}
        assert (await other.threads.get(tid))["values"] == {"n": expected}
    found_a = await a.threads.search(metadata={"alternating": True}, limit=100)
    found_b = await b.threads.search(metadata={"alternating": True}, limit=100)
    assert tid in {t["thread_id"] for t in found_a}
    assert [t["thread_id"] for t in found_a] == [t["thread_id"] for t in found_b]
    assert len(await _linear(b, tid)) == 6 * 7


async def test_reject_gives_one_409(replicas: list[ServeProcess]) -> None:
    a, b = sdk(replicas[0].url), sdk(replicas[1].url)
    tid = (await a.threads.create())["thread_id"]
    runs = [
        client.runs.wait(tid, "slow", input={"delay": 0.4}, multitask_strategy="reject")
        for client in (a, b)
    ]
    results = await asyncio.gather(*runs, return_exceptions=True)
    refused = [r for r in results if isinstance(r, httpx.HTTPStatusError)]
    done = [r for r in results if isinstance(r, dict)]
    assert len(refused) == 1 and len(done) == 1, results
    assert refused[0].response.status_code == 409
    assert done[0]["log"] == ["first", "second", "third"]
    history = await _linear(a, tid)
    assert history[0]["values"]["log"] == ["first", "second", "third"]  # ran once


async def test_enqueue_serialises(replicas: list[ServeProcess]) -> None:
    a, b = sdk(replicas[0].url), sdk(replicas[1].url)
    tid = (await a.threads.create())["thread_id"]
    runs = [
        client.runs.wait(tid, "slow", input={"delay": 0.3}, multitask_strategy="enqueue")
        for client in (a, b, a, b)
    ]
    results = await asyncio.gather(*runs)
    lengths = sorted(len(r["log"]) for r in results)
    assert lengths == [3, 6, 9, 12]  # each run saw the previous one's whole result
    history = await _linear(b, tid)
    assert history[0]["values"]["log"] == ["first", "second", "third"] * 4
    assert (await a.threads.get(tid))["status"] == "idle"
