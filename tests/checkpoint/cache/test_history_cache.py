"""History listings served by Redis: one round trip and no Postgres on a warm replica, always
the listing Postgres gives (after writes of other replicas, forks, a lease, a delete)."""

from __future__ import annotations

import asyncio
from typing import Any

from langgraph_resilient import ResilientSaver
from tests.conftest import POSTGRES_URL
from tests.graphs import chain
from tests.probes import RedisWire, log_postgres_statements
from tests.servers import RedisServer


def _kwargs(url: str, prefix: str) -> dict[str, Any]:
    return {
        "postgres_url": POSTGRES_URL,
        "redis_url": url,
        "prefix": prefix,
        "redis_repair_interval_s": 3600,
    }


def _config(thread_id: str) -> Any:
    return {"configurable": {"thread_id": thread_id}}


async def _listing(saver: ResilientSaver, thread_id: str, **kwargs: Any) -> list[Any]:
    config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    return [
        (
            t.config["configurable"]["checkpoint_id"],
            t.checkpoint["channel_values"],
            t.pending_writes,
        )
        async for t in saver.alist(config, **kwargs)  # type: ignore[arg-type]
    ]


async def test_a_warm_history_is_one_round_trip_and_what_postgres_lists(
    fresh_redis: RedisServer, prefix: str
) -> None:
    async with (
        RedisWire(fresh_redis.url) as wire,
        ResilientSaver.from_urls(**_kwargs(wire.url, prefix), pool_max_size=2) as tiered,
        ResilientSaver.from_urls(postgres_url=POSTGRES_URL, prefix=prefix) as alone,
    ):
        graph = chain("a", "b").compile(checkpointer=tiered)
        for turn in range(8):
            await graph.ainvoke({"log": [f"user {turn}"]}, _config("h"))
        assert tiered.tiers.redis is not None
        await tiered.tiers.redis.invalidate(["h"])  # as a repair does: an empty index
        truth = await _listing(alone, "h", limit=10)
        assert len(truth) == 10
        assert await _listing(tiered, "h", limit=10) == truth, "a miss: from Postgres, then filled"
        pg = await log_postgres_statements(tiered)
        await asyncio.sleep(0.1)
        wire.take()
        pg.clear()
        history = [s async for s in graph.aget_state_history(_config("h"), limit=10)]
        await asyncio.sleep(0.1)
        assert [s.config["configurable"]["checkpoint_id"] for s in history] == [
            c for c, *_ in truth
        ]
        assert wire.take() == 1, "one Redis round trip"
        assert pg == [], "no Postgres"
        for kwargs in ({"limit": 3}, {"limit": 25}, {"limit": 5, "before": history[4].config}):
            assert await _listing(tiered, "h", **kwargs) == await _listing(alone, "h", **kwargs)
        assert await _listing(tiered, "h") == await _listing(alone, "h"), "no limit: all of it"


async def test_other_replicas_writes_forks_and_deletes_show_at_once(
    fresh_redis: RedisServer, prefix: str
) -> None:
    kwargs = _kwargs(fresh_redis.url, prefix)
    async with (
        ResilientSaver.from_urls(**kwargs) as one,
        ResilientSaver.from_urls(**kwargs) as two,
        ResilientSaver.from_urls(postgres_url=POSTGRES_URL, prefix=prefix) as alone,
    ):
        graphs = [chain("a").compile(checkpointer=s) for s in (one, two)]
        for turn in range(6):
            await graphs[turn % 2].ainvoke({"log": [f"user {turn}"]}, _config("f"))
            for saver in (one, two):
                assert await _listing(saver, "f", limit=4) == await _listing(alone, "f", limit=4)
        # time travel: a new branch from an older checkpoint; the listing has both branches
        older = [s async for s in graphs[0].aget_state_history(_config("f"), limit=6)][-1]
        await graphs[1].aupdate_state(older.config, {"log": ["forked"]})
        for saver in (two, one):
            assert await _listing(saver, "f", limit=10) == await _listing(alone, "f", limit=10)
        await one.adelete_thread("f")
        assert await _listing(two, "f", limit=10) == []


async def test_a_lease_holder_publishes_its_checkpoints_for_the_history(
    fresh_redis: RedisServer, prefix: str
) -> None:
    async with (
        RedisWire(fresh_redis.url) as wire,
        ResilientSaver.from_urls(**_kwargs(wire.url, prefix)) as holder,
        ResilientSaver.from_urls(**_kwargs(fresh_redis.url, prefix)) as reader,
        ResilientSaver.from_urls(postgres_url=POSTGRES_URL, prefix=prefix) as alone,
    ):
        graph = chain("a", "b", "c").compile(checkpointer=holder)
        await graph.ainvoke({"log": ["first"]}, _config("l"))
        assert await _listing(reader, "l", limit=10) == await _listing(alone, "l", limit=10)
        async with holder.lock_thread("l"):
            await graph.ainvoke({"log": ["leased"]}, _config("l"))
            during = await _listing(holder, "l", limit=10)
            assert during == await _listing(alone, "l", limit=10), "the holder reads Postgres"
            assert await _listing(reader, "l", limit=10) == during, "so does everyone else"
        wire.take()
        truth = await _listing(alone, "l", limit=10)
        assert await _listing(holder, "l", limit=10) == truth
        assert wire.take() == 1, "after the release: from Redis, no fill"
        assert await _listing(reader, "l", limit=10) == truth

        async with holder.lock_thread("l"):  # more checkpoints than a holder keeps
            for turn in range(12):
                await graph.ainvoke({"log": [f"long {turn}"]}, _config("l"))
        truth = await _listing(alone, "l", limit=10)
        assert await _listing(reader, "l", limit=10) == truth
        assert await _listing(reader, "l", limit=40) == await _listing(alone, "l", limit=40)
