"""Under a Redis lease the holder publishes to Redis once, at release, instead of at every
write (its writes touch Redis not at all): fewer round trips, and still no stale read
anywhere, even if the holder dies."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from langgraph.graph import StateGraph

from langgraph_resilient import ResilientSaver
from tests.conftest import POSTGRES_URL
from tests.graphs import Log, chain
from tests.probes import RedisWire
from tests.servers import RedisServer


def chain_graph() -> StateGraph[Log]:
    return chain("a", "b", "c", "d", "e")


def _kwargs(fresh_redis: RedisServer, prefix: str) -> dict[str, Any]:
    return {
        "postgres_url": POSTGRES_URL,
        "redis_url": fresh_redis.url,
        "prefix": prefix,
        "redis_repair_interval_s": 3600,
    }


async def _round_trips_per_turn(
    saver: ResilientSaver, wire: RedisWire, thread_id: str, *, leased: bool, turns: int = 4
) -> float:
    graph = chain_graph().compile(checkpointer=saver)
    config = {"configurable": {"thread_id": thread_id}}
    # warm up: statements prepared, scripts loaded, the thread's first epoch band confirmed
    if leased:
        async with saver.lock_thread(thread_id):
            await graph.ainvoke({"log": ["warm"]}, config)
    else:
        await graph.ainvoke({"log": ["warm"]}, config)
    await asyncio.sleep(0.1)
    wire.take()
    for turn in range(turns):
        if leased:
            async with saver.lock_thread(thread_id):
                await graph.ainvoke({"log": [f"user {turn}"]}, config)
        else:
            await graph.ainvoke({"log": [f"user {turn}"]}, config)
    await asyncio.sleep(0.1)
    return wire.take() / turns


async def test_the_lease_costs_fewer_redis_round_trips_than_no_lease(
    fresh_redis: RedisServer, prefix: str
) -> None:
    async with RedisWire(fresh_redis.url) as wire:
        kwargs = {**_kwargs(fresh_redis, prefix), "redis_url": wire.url}
        async with ResilientSaver.from_urls(**kwargs) as saver:
            plain = await _round_trips_per_turn(saver, wire, "plain", leased=False)
            leased = await _round_trips_per_turn(saver, wire, "leased", leased=True)
    # plain: a head read and an announcement per flush (each carrying the publications queued
    # before it) and the last publication; leased: acquire, head read, one publication and the
    # release, nothing while it writes
    assert leased == 4, (plain, leased)
    assert plain >= 2 * leased, (plain, leased)


async def test_readers_never_see_a_stale_head_during_or_after_a_lease(
    fresh_redis: RedisServer, prefix: str
) -> None:
    async with (
        ResilientSaver.from_urls(**_kwargs(fresh_redis, prefix)) as holder,
        ResilientSaver.from_urls(**_kwargs(fresh_redis, prefix)) as reader,
    ):
        writer_graph = chain_graph().compile(checkpointer=holder)
        reader_graph = chain_graph().compile(checkpointer=reader)
        config = {"configurable": {"thread_id": "t"}}
        await writer_graph.ainvoke({"log": ["0"]}, config)
        assert len((await reader_graph.aget_state(config)).values["log"]) == 6  # warm reader
        async with holder.lock_thread("t"):
            await writer_graph.ainvoke({"log": ["1"]}, config)
            during = (await reader_graph.aget_state(config)).values["log"]
            assert during[-6:] == ["1", "a", "b", "c", "d", "e"], "acknowledged writes are seen"
            await writer_graph.ainvoke({"log": ["2"]}, config)
            assert (await reader_graph.aget_state(config)).values["log"][-6] == "2"
        after = (await reader_graph.aget_state(config)).values["log"]
        assert len(after) == 18 and after[-6] == "2"
        tier = reader.tiers.redis
        assert tier is not None
        lookup = await tier.read("t", "", None)
        assert lookup.row is not None, "after the release the head is served from Redis again"


ROOT = str(Path(__file__).resolve().parents[3])

_DYING_HOLDER = textwrap.dedent(
    """
    import asyncio, os, sys
    sys.path.insert(0, sys.argv[4])
    from tests.graphs import chain
    from langgraph_resilient import ResilientSaver

    async def main():
        saver = ResilientSaver.from_urls(
            postgres_url=sys.argv[1], redis_url=sys.argv[2], prefix=sys.argv[3])
        await saver.__aenter__()
        graph = chain("a", "b", "c", "d", "e").compile(checkpointer=saver)
        lock = saver.lock_thread("t", ttl_s=1.0)
        await lock.__aenter__()
        await graph.ainvoke({"log": ["dying"]}, {"configurable": {"thread_id": "t"}})
        os._exit(0)  # dies holding the lease, its writes never published to Redis

    asyncio.run(main())
    """
)


async def test_a_holder_that_dies_before_publishing_leaves_nothing_stale(
    fresh_redis: RedisServer, prefix: str
) -> None:
    async with ResilientSaver.from_urls(**_kwargs(fresh_redis, prefix)) as reader:
        graph = chain_graph().compile(checkpointer=reader)
        config = {"configurable": {"thread_id": "t"}}
        await graph.ainvoke({"log": ["before"]}, config)
        assert len((await graph.aget_state(config)).values["log"]) == 6
        result = subprocess.run(  # noqa: ASYNC221 (the test waits for it on purpose)
            [sys.executable, "-c", _DYING_HOLDER, POSTGRES_URL, fresh_redis.url, prefix, ROOT],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        for _ in range(2):  # while its lease key lives, and after it expired
            log = (await graph.aget_state(config)).values["log"]
            assert log[-6:] == ["dying", "a", "b", "c", "d", "e"]
            await asyncio.sleep(1.2)
        async with reader.lock_thread("t"):
            await graph.ainvoke({"log": ["next"]}, config)
        assert (await graph.aget_state(config)).values["log"][-6] == "next"
