"""The tiered saver: round trips per operation, coherence between replicas, corrupt entries,
and graphs that keep running while Redis is stopped or frozen (private Redis servers)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio
from langgraph.checkpoint.base import empty_checkpoint
from prometheus_client import REGISTRY

from langgraph_resilient import ResilientSaver
from langgraph_resilient.checkpoint.convert import checkpoint_record
from langgraph_resilient.checkpoint.records import Batch
from tests.conftest import POSTGRES_URL
from tests.graphs import final_states, run_turns, turn_graph
from tests.probes import RedisRequests, RedisWire, log_postgres_statements
from tests.servers import RedisServer


def _cp(i: int) -> dict[str, Any]:
    cp = dict(empty_checkpoint())
    cp["channel_values"] = {"a": i, "b": f"value {i}"}
    cp["channel_versions"] = {"a": str(i), "b": str(i)}
    return cp


async def test_round_trips_of_a_warm_head_read_and_of_a_put(
    fresh_redis: RedisServer, prefix: str
) -> None:
    async with (
        RedisWire(fresh_redis.url) as wire,
        ResilientSaver.from_urls(
            postgres_url=POSTGRES_URL,
            redis_url=wire.url,
            prefix=prefix,
            pool_min_size=1,
            pool_max_size=2,
            redis_repair_interval_s=3600,
        ) as saver,
    ):
        tier = saver.tiers.redis
        assert tier is not None
        config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
        # warm up: statements prepared, scripts loaded, caches filled
        first = await saver.aput(config, _cp(1), {}, {"a": "1", "b": "1"})  # type: ignore[arg-type]
        await saver.aput_writes(first, [("a", 5)], "task")
        assert await saver.aget_tuple(config) is not None  # type: ignore[arg-type]
        pg = await log_postgres_statements(saver)

        async with RedisRequests(fresh_redis.url) as requests:
            await asyncio.sleep(0.1)
            requests.take()
            wire.take()
            pg.clear()
            head = await saver.aget_tuple(config)  # type: ignore[arg-type]
            await asyncio.sleep(0.1)
            assert head is not None and head.config == first
            assert head.pending_writes == [("task", "a", 5)]
            assert pg == [], "a warm head read never touches Postgres"
            assert wire.take() == 1, "and costs one Redis round trip"
            assert requests.take() == ["EVALSHA"]

            cp2 = _cp(2)
            cp2["channel_versions"]["b"] = "1"  # b unchanged: its value stays at version 1
            second = await saver.aput(first, cp2, {}, {"a": "2"})  # type: ignore[arg-type]
            assert wire.take() == 1, "a put is announced in parallel with its commit"
            assert len(tier.publications) == 1, "and acknowledged before it is published"
            head = await saver.aget_tuple(config)  # type: ignore[arg-type]
            await asyncio.sleep(0.1)
            assert wire.take() == 1, "the next round trip (a read) carries the publication"
            assert requests.take() == ["EVALSHA"] * 3, "announce, publish, read"
            assert len(pg) == 1, "a put is one Postgres statement, the read none"
            assert head is not None and head.config == second
            assert head.checkpoint["channel_values"] == {"a": 2, "b": "value 1"}
            pg.clear()

            third = await saver.aput(second, _cp(3), {}, {"a": "3", "b": "3"})  # type: ignore[arg-type]
            await asyncio.sleep(0.1)
            assert wire.take() == 2, "a put followed by nothing: its publication goes alone"
            assert len(tier.publications) == 0
            head = await saver.aget_tuple(config)  # type: ignore[arg-type]
            await asyncio.sleep(0.1)
            assert head is not None and head.config == third
            assert len(pg) == 1, "the put; the read of what it published is a hit"
            assert wire.take() == 1


async def test_a_replica_sees_the_other_replicas_writes_and_deletes(
    fresh_redis: RedisServer, prefix: str
) -> None:
    kwargs = {"postgres_url": POSTGRES_URL, "redis_url": fresh_redis.url, "prefix": prefix}
    async with (
        ResilientSaver.from_urls(**kwargs) as one,  # type: ignore[arg-type]
        ResilientSaver.from_urls(**kwargs) as two,  # type: ignore[arg-type]
    ):
        graphs = [turn_graph().compile(checkpointer=s) for s in (one, two)]
        config = {"configurable": {"thread_id": "shared"}}
        for turn in range(8):
            graph = graphs[turn % 2]
            state = await graph.ainvoke({"log": [f"user {turn}"]}, config)
            assert len(state["log"]) == 2 * (turn + 1), "every turn sees the previous one"
        writes_seen = await two.aget_tuple(config)  # type: ignore[arg-type]
        assert writes_seen is not None

        await one.adelete_thread("shared")
        assert await two.aget_tuple(config) is None  # type: ignore[arg-type]
        assert await two.aget_tuple(writes_seen.config) is None, "even by explicit id"
        assert (await graphs[1].aget_state(config)).values == {}


async def test_corrupt_and_foreign_entries_are_dropped_and_reread(
    fresh_redis: RedisServer, prefix: str
) -> None:
    async with ResilientSaver.from_urls(
        postgres_url=POSTGRES_URL, redis_url=fresh_redis.url, prefix=prefix
    ) as writer:
        config = {"configurable": {"thread_id": "c", "checkpoint_ns": ""}}
        stored = await writer.aput(config, _cp(1), {}, {"a": "1", "b": "1"})  # type: ignore[arg-type]
    client = redis.asyncio.Redis.from_url(fresh_redis.url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        assert keys, "the put was cached in Redis"
        for key in keys:
            if await client.type(key) == b"string" and b":b:" in key:
                await client.set(key, b"\x00garbage from another program")
            if await client.type(key) == b"hash" and b":c:" in key:
                await client.hset(key, "r", b"LGR1\xc1\xc1")
    finally:
        await client.aclose()
    async with ResilientSaver.from_urls(
        postgres_url=POSTGRES_URL, redis_url=fresh_redis.url, prefix=prefix
    ) as reader:
        tup = await reader.aget_tuple(config)  # type: ignore[arg-type]
        assert tup is not None and tup.config == stored
        assert tup.checkpoint["channel_values"] == {"a": 1, "b": "value 1"}
        again = await reader.aget_tuple(config)  # type: ignore[arg-type]
        assert again is not None and again.checkpoint["channel_values"] == {"a": 1, "b": "value 1"}


def _cache_hits() -> float:
    return (
        REGISTRY.get_sample_value("langgraph_checkpoint_cache_reads_total", {"result": "hit"})
        or 0.0
    )


async def _redis_keys(url: str, prefix: str) -> int:
    client = redis.asyncio.Redis.from_url(url)
    try:
        return len([k async for k in client.scan_iter(match=f"{prefix}*")])
    finally:
        await client.aclose()


@pytest.mark.fault
async def test_redis_stopped_mid_run_no_invocation_fails(
    fresh_redis: RedisServer, prefix: str
) -> None:
    async with ResilientSaver.from_urls(
        postgres_url=POSTGRES_URL, redis_url=fresh_redis.url, prefix=prefix
    ) as saver:
        graph = turn_graph().compile(checkpointer=saver)
        await run_turns(graph, 3, range(3))
        fresh_redis.stop()
        await run_turns(graph, 3, range(3, 7))
        assert saver.tiers.redis is not None and saver.tiers.redis.breaker.is_open
        fresh_redis.start()  # same port, empty: a restart without persistence
        await asyncio.sleep(saver.tiers.redis.breaker.open_for_s)
        await run_turns(graph, 3, range(7, 10))
        assert not saver.tiers.redis.breaker.is_open, "Redis is used again"
        assert await _redis_keys(fresh_redis.url, prefix) > 0
        states = await final_states(graph, 3)
    expected = [x for turn in range(10) for x in (f"user {turn}", f"reply {2 * turn + 1}")]
    assert states == [expected] * 3, "state identical to a run without the fault"


@pytest.mark.fault
async def test_a_saver_started_without_redis_uses_it_once_it_is_up(
    fresh_redis: RedisServer, prefix: str
) -> None:
    fresh_redis.stop()
    async with ResilientSaver.from_urls(
        postgres_url=POSTGRES_URL, redis_url=fresh_redis.url, prefix=prefix
    ) as saver:
        assert saver.tiers.redis is not None and saver.tiers.redis.breaker.is_open
        graph = turn_graph().compile(checkpointer=saver)
        await run_turns(graph, 2, range(2))
        fresh_redis.start()
        await asyncio.sleep(saver.tiers.redis.breaker.open_for_s)
        await run_turns(graph, 2, range(2, 4))
        assert not saver.tiers.redis.breaker.is_open, "Redis is used once it answers"
        assert await _redis_keys(fresh_redis.url, prefix) > 0
        hits = REGISTRY.get_sample_value(
            "langgraph_checkpoint_cache_reads_total", {"result": "hit"}
        )
        head = await saver.aget_tuple({"configurable": {"thread_id": "t0"}})
        after = REGISTRY.get_sample_value(
            "langgraph_checkpoint_cache_reads_total", {"result": "hit"}
        )
        assert head is not None and after == (hits or 0) + 1, "a head read is served by the cache"
        states = await final_states(graph, 2)
    expected = [x for turn in range(4) for x in (f"user {turn}", f"reply {2 * turn + 1}")]
    assert states == [expected] * 2


@pytest.mark.fault
async def test_redis_frozen_mid_run_no_invocation_fails_and_no_stale_head(
    fresh_redis: RedisServer, prefix: str
) -> None:
    kwargs: dict[str, Any] = {
        "postgres_url": POSTGRES_URL,
        "redis_url": fresh_redis.url,
        "prefix": prefix,
        "redis_socket_timeout_s": 0.2,
    }
    async with (
        ResilientSaver.from_urls(**kwargs) as saver,
        ResilientSaver.from_urls(**kwargs) as other,
    ):
        graph = turn_graph().compile(checkpointer=saver)
        other_graph = turn_graph().compile(checkpointer=other)
        await run_turns(graph, 2, range(3))
        assert len(await final_states(other_graph, 2)) == 2  # the other replica is warm
        fresh_redis.freeze()
        try:
            await run_turns(graph, 2, range(3, 6))
        finally:
            fresh_redis.thaw()
        assert saver.tiers.redis is not None and saver.tiers.redis.breaker.is_open
        # the other replica never saw the outage: its periodic repair catches up
        await asyncio.sleep(other.tiers.redis.link.repair_interval_s * 2.5)  # type: ignore[union-attr]
        expected = [x for turn in range(6) for x in (f"user {turn}", f"reply {2 * turn + 1}")]
        assert await final_states(other_graph, 2) == [expected] * 2, "no stale head"
        await asyncio.sleep(saver.tiers.redis.breaker.open_for_s)
        await run_turns(graph, 2, range(6, 8))
        assert not saver.tiers.redis.breaker.is_open, "Redis is used again"
        expected = [x for turn in range(8) for x in (f"user {turn}", f"reply {2 * turn + 1}")]
        assert await final_states(other_graph, 2) == [expected] * 2


async def test_a_delete_between_commit_and_publish_does_not_resurrect_the_thread(
    fresh_redis: RedisServer, prefix: str
) -> None:
    """Replica A commits a checkpoint, replica B deletes the thread, then A publishes to Redis
    (the order a slow network can produce): B must not be served A's deleted checkpoint."""
    kwargs = {"postgres_url": POSTGRES_URL, "redis_url": fresh_redis.url, "prefix": prefix}
    async with (
        ResilientSaver.from_urls(**kwargs) as a,  # type: ignore[arg-type]
        ResilientSaver.from_urls(**kwargs) as b,  # type: ignore[arg-type]
    ):
        config = {"configurable": {"thread_id": "race", "checkpoint_ns": ""}}
        first = await a.aput(config, _cp(1), {}, {"a": "1", "b": "1"})  # type: ignore[arg-type]
        assert await a.aget_tuple(config) is not None  # type: ignore[arg-type]
        assert await b.aget_tuple(config) is not None  # type: ignore[arg-type]

        cp2 = _cp(2)
        cp2["channel_values"] = {"a": 2}
        cp2["channel_versions"] = {"a": "2"}  # everything it needs is in what A publishes
        late = checkpoint_record(
            a.serde,
            a.settings,
            first,
            cp2,
            {},
            {"a": "2"},
            a.fenced.epoch_of,  # type: ignore[arg-type]
        )
        tier = a.tiers.redis
        assert tier is not None
        announcement = tier.announce(["race"])
        batch = Batch.of(late)
        stored = await a.store.write_batch(batch)  # committed, not yet published
        assert await tier.confirm(announcement)
        assert await b.aget_tuple(config) is not None, "in flight: B reads Postgres"  # type: ignore[arg-type]
        await b.adelete_thread("race")
        tier.publish(batch, stored, announcement)
        await tier.publications.flush()  # the publication arrives after the delete

        assert await b.aget_tuple(config) is None  # type: ignore[arg-type]
        assert await a.aget_tuple(config) is None  # type: ignore[arg-type]


async def test_a_repeated_regular_write_is_not_cached_over_the_stored_one(
    fresh_redis: RedisServer, prefix: str
) -> None:
    """A regular write keeps its first value. After the thread's cache was invalidated, a
    repeated write with another value (which the durable tier ignores) must not reach Redis,
    or a later fill would mark the writes complete around the wrong value."""
    kwargs = {"postgres_url": POSTGRES_URL, "redis_url": fresh_redis.url, "prefix": prefix}
    async with (
        ResilientSaver.from_urls(**kwargs) as a,  # type: ignore[arg-type]
        ResilientSaver.from_urls(**kwargs) as b,  # type: ignore[arg-type]
    ):
        config = {"configurable": {"thread_id": "w", "checkpoint_ns": ""}}
        stored = await a.aput(config, _cp(1), {"run_id": "r1"}, {"a": "1"})  # type: ignore[arg-type]
        await a.aput_writes(stored, [("a", "first")], "task")
        assert a.tiers.redis is not None
        await a.tiers.redis.invalidate(["w"])  # as a delete_for_runs or a repair would
        await a.aput_writes(stored, [("a", "second")], "task")  # ignored: first value wins
        for saver in (b, a, b):
            tup = await saver.aget_tuple(stored)
            assert tup is not None and tup.pending_writes == [("task", "a", "first")]
