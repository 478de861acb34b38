"""The write path keeps Redis off the acknowledgement and stays coherent: writes in flight keep
readers away, fills from before a write are refused, special writes published out of order are
not trusted, a failed commit and a writer that dies before publishing leave nothing stale, and
a lease holder's writes and reads touch Redis not at all (private Redis servers)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio
from langgraph.checkpoint.base import empty_checkpoint

from langgraph_resilient import ResilientSaver
from langgraph_resilient.checkpoint.records import Batch, Stored, WriteRecord, WritesOp
from langgraph_resilient.errors import ResilientError
from tests.conftest import POSTGRES_URL
from tests.graphs import chain
from tests.probes import RedisWire, log_postgres_statements
from tests.servers import RedisServer

ROOT = str(Path(__file__).resolve().parents[3])
INTERRUPT = "__interrupt__"  # LangGraph's special channel (index -3), private since 1.0


def _cp(i: int) -> dict[str, Any]:
    cp = dict(empty_checkpoint())
    cp["channel_values"] = {"a": i}
    cp["channel_versions"] = {"a": str(i)}
    return cp


def _kwargs(url: str, prefix: str) -> dict[str, Any]:
    return {
        "postgres_url": POSTGRES_URL,
        "redis_url": url,
        "prefix": prefix,
        "redis_repair_interval_s": 3600,
    }


async def _in_flight(url: str, prefix: str, thread_id: str) -> list[bytes]:
    client = redis.asyncio.Redis.from_url(url)
    try:
        tokens: list[bytes] = []
        async for key in client.scan_iter(match=f"{prefix}{{{thread_id}}}:*:f"):
            tokens += await client.zrange(key, 0, -1)
        return tokens
    finally:
        await client.aclose()


async def test_a_fill_read_before_a_write_is_refused(fresh_redis: RedisServer, prefix: str) -> None:
    """B misses and reads a checkpoint's writes from Postgres; A replaces a special write of
    that checkpoint and publishes it; B's fill, made from what it read before, must not land
    (it would mark the writes complete around the replaced value)."""
    kwargs = _kwargs(fresh_redis.url, prefix)
    async with (
        ResilientSaver.from_urls(**kwargs) as a,
        ResilientSaver.from_urls(**kwargs) as b,
    ):
        config = {"configurable": {"thread_id": "f", "checkpoint_ns": ""}}
        stored = await a.aput(config, _cp(1), {}, {"a": "1"})  # type: ignore[arg-type]
        await a.aput_writes(stored, [(INTERRUPT, "first")], "task")
        tier_a, tier_b = a.tiers.redis, b.tiers.redis
        assert tier_a is not None and tier_b is not None
        await tier_b.invalidate(["f"])
        cid = stored["configurable"]["checkpoint_id"]

        lookup = await tier_b.read("f", "", cid)
        assert lookup.row is None and lookup.fillable
        row = await b.store.get_checkpoint("f", "", cid)
        assert row is not None and [w.data for w in row.writes] != []
        await a.aput_writes(stored, [(INTERRUPT, "second")], "task")
        await tier_a.publications.flush()
        await tier_b.fill(row, lookup, head=False)

        for saver in (b, a):
            tup = await saver.aget_tuple(stored)
            assert tup is not None and tup.pending_writes == [("task", INTERRUPT, "second")]


async def test_special_writes_published_out_of_order_are_not_trusted(
    fresh_redis: RedisServer, prefix: str
) -> None:
    """Two flushes replace the same special write; their publications reach Redis in the
    opposite order. Readers still get the durable tier's value, then cache it again."""
    async with (
        ResilientSaver.from_urls(**_kwargs(fresh_redis.url, prefix)) as a,
        ResilientSaver.from_urls(**_kwargs(fresh_redis.url, prefix)) as b,
    ):
        config = {"configurable": {"thread_id": "o", "checkpoint_ns": ""}}
        stored = await a.aput(config, _cp(1), {}, {"a": "1"})  # type: ignore[arg-type]
        cid = stored["configurable"]["checkpoint_id"]
        tier = a.tiers.redis
        assert tier is not None
        assert await b.aget_tuple(stored) is not None  # cached, writes complete
        publications = []
        for value in ("first", "second"):
            [write] = [
                WriteRecord("task", -3, INTERRUPT, *a.serde.dumps_typed(value), "")
            ]  # idx -3: LangGraph's index of INTERRUPT
            announcement = tier.announce(["o"])
            keys = await a.store.put_writes("o", "", cid, [write], None)
            assert await tier.confirm(announcement)
            op = WritesOp("o", "", cid, [write])
            done = Stored(writes={("o", "", cid, task, idx) for task, idx in keys})
            publications.append((Batch([], [op]), done, announcement))
        for batch, done, announcement in reversed(publications):  # "second" lands first
            tier.publish(batch, done, announcement)
            await tier.publications.flush()
        assert await _in_flight(fresh_redis.url, prefix, "o") == []

        for saver in (b, a, b):
            tup = await saver.aget_tuple(stored)
            assert tup is not None and tup.pending_writes == [("task", INTERRUPT, "second")]
        lookup = await b.tiers.redis.read("o", "", cid)  # type: ignore[union-attr]
        assert lookup.row is not None, "refilled from the durable tier: served by Redis again"


async def test_a_failed_commit_abandons_its_announcement(
    fresh_redis: RedisServer, prefix: str
) -> None:
    """A trigger makes Postgres refuse one thread's next put: the writer gets the error, the
    thread's token leaves the writes in flight and readers keep the stored head."""
    kwargs = _kwargs(fresh_redis.url, prefix)
    async with (
        ResilientSaver.from_urls(**kwargs) as a,
        ResilientSaver.from_urls(**kwargs) as b,
    ):
        config = {"configurable": {"thread_id": "doomed", "checkpoint_ns": ""}}
        first = await a.aput(config, _cp(1), {}, {"a": "1"})  # type: ignore[arg-type]
        assert (await b.aget_tuple(config)).config == first  # type: ignore[arg-type,union-attr]
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(
                f"""
                CREATE FUNCTION {prefix}refuse() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN RAISE EXCEPTION 'refused by the test'; END $$;
                CREATE TRIGGER {prefix}refuse BEFORE INSERT ON {prefix}checkpoints
                FOR EACH ROW WHEN (NEW.thread_id = 'doomed') EXECUTE FUNCTION {prefix}refuse();
                """
            )
        finally:
            await conn.close()
        with pytest.raises(ResilientError):
            await a.aput(first, _cp(2), {}, {"a": "2"})  # type: ignore[arg-type]
        assert a.tiers.redis is not None
        await a.tiers.redis.publications.flush()
        assert await _in_flight(fresh_redis.url, prefix, "doomed") == []
        for saver in (b, a):
            tup = await saver.aget_tuple(config)  # type: ignore[arg-type]
            assert tup is not None and tup.config == first


_DIES_BEFORE_PUBLISHING = textwrap.dedent(
    """
    import asyncio, os, sys
    sys.path.insert(0, sys.argv[4])
    from langgraph_resilient import ResilientSaver
    from langgraph_resilient.checkpoint.cache import publication
    from tests.graphs import chain

    publication.IN_FLIGHT_TTL_S = 1.0  # so that the test waits one second, not thirty

    async def main():
        saver = ResilientSaver.from_urls(
            postgres_url=sys.argv[1], redis_url=sys.argv[2], prefix=sys.argv[3])
        await saver.__aenter__()
        config = {"configurable": {"thread_id": "t"}}
        await chain("a").compile(checkpointer=saver).aupdate_state(config, {"log": ["dying"]})
        assert len(saver.tiers.redis.publications) == 1, "acknowledged, not yet published"
        os._exit(0)  # dies between the acknowledgement and the publication

    asyncio.run(main())
    """
)


async def test_a_writer_that_dies_before_publishing_leaves_nothing_stale(
    fresh_redis: RedisServer, prefix: str
) -> None:
    async with ResilientSaver.from_urls(**_kwargs(fresh_redis.url, prefix)) as reader:
        graph = chain("a").compile(checkpointer=reader)
        config: Any = {"configurable": {"thread_id": "t"}}
        await graph.ainvoke({"log": ["before"]}, config)
        assert (await graph.aget_state(config)).values["log"] == ["before", "a"]  # warm
        argv = [prefix, ROOT]
        result = subprocess.run(  # noqa: ASYNC221 (the test waits for it on purpose)
            [sys.executable, "-c", _DIES_BEFORE_PUBLISHING, POSTGRES_URL, fresh_redis.url, *argv],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert await _in_flight(fresh_redis.url, prefix, "t") != [], "its token is left"
        expected = ["before", "a", "dying"]
        assert (await graph.aget_state(config)).values["log"] == expected, "token live"
        await asyncio.sleep(1.2)
        assert (await graph.aget_state(config)).values["log"] == expected, "token expired"
        assert await _in_flight(fresh_redis.url, prefix, "t") == []
        tier = reader.tiers.redis
        assert tier is not None
        assert (await tier.read("t", "", None)).row is not None, "cached again"


async def test_a_lease_holder_touches_redis_to_acquire_read_and_release_only(
    fresh_redis: RedisServer, prefix: str
) -> None:
    """Under the lease: the acquisition, the turn's first head read (Redis, past the lease's
    own guard), then writes and reads of what it wrote from this process alone, and the
    publication and the release. Postgres sees the writes, no read."""
    async with (
        RedisWire(fresh_redis.url) as wire,
        ResilientSaver.from_urls(**_kwargs(wire.url, prefix), pool_max_size=2) as saver,
        ResilientSaver.from_urls(**_kwargs(fresh_redis.url, prefix)) as other,
    ):
        graph = chain("a", "b", "c").compile(checkpointer=saver)
        config: Any = {"configurable": {"thread_id": "held"}}
        async with saver.lock_thread("held"):
            await graph.ainvoke({"log": ["warm"]}, config)
        assert (await graph.aget_state(config)).values["log"][-1] == "c"
        pg = await log_postgres_statements(saver)
        await asyncio.sleep(0.1)
        wire.take()
        pg.clear()
        async with saver.lock_thread("held"):
            assert wire.take() == 1, "acquire"
            await graph.ainvoke({"log": ["turn"]}, config)
            assert wire.take() == 1, "the head read; the writes: nothing"
            for _ in range(3):
                state = await graph.aget_state(config)
                assert state.values["log"][-4:] == ["turn", "a", "b", "c"]
            other_view = (await chain("a").compile(checkpointer=other).aget_state(config)).values
            assert other_view["log"][-4:] == ["turn", "a", "b", "c"], "others read Postgres"
            await asyncio.sleep(0.1)
            assert wire.take() == 0, "reads of what it wrote: from this process"
        assert wire.take() == 2, "the publication, then the release"
        await asyncio.sleep(0.1)
        reads = [q for q in pg if "INSERT" not in q.upper()]
        assert pg and reads == [], "the holder read nothing from Postgres"
        tier = other.tiers.redis
        assert tier is not None
        assert (await tier.read("held", "", None)).row is not None, "published at release"
