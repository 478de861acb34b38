"""Every script the package sends runs exactly once, even when Redis lost its script cache.

A call refused with NOSCRIPT did not run, but the calls around it in the same round trip did;
sending the whole batch again would run those twice, and several scripts are not idempotent
(the lease's epoch counter, the cache generation bumps). These tests flush the script cache of
a private Redis between calls (``fresh_redis``: never the shared one) and count.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio

from langgraph_resilient import CircuitBreaker, CircuitState, ResilientSaver
from langgraph_resilient._redis.client import RedisSettings, connect
from langgraph_resilient._redis.wire import LuaScript, PipelineScripts, ScriptRunner, WireScripts
from langgraph_resilient.checkpoint.fencing import EPOCH_BAND
from tests.conftest import POSTGRES_URL, drop_prefixed_tables, unique_prefix
from tests.graphs import chain
from tests.servers import RedisServer

COUNT = LuaScript("return redis.call('INCR', KEYS[1])  -- test_script_cache")
ECHO = LuaScript("return ARGV[1]  -- test_script_cache")


@contextlib.asynccontextmanager
async def _admin(url: str) -> AsyncIterator[Any]:
    client = redis.asyncio.Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


async def _runners(url: str) -> list[ScriptRunner]:
    client = connect(RedisSettings(url=url))
    runners: list[ScriptRunner] = [WireScripts(client, 2.0), PipelineScripts(client, 2.0)]
    for runner in runners:
        await runner.identify()
    return runners


async def test_a_batch_refused_in_part_runs_each_call_once(fresh_redis: RedisServer) -> None:
    """The server knows COUNT but not ECHO (flushed, then COUNT loaded again): only the ECHO
    calls are sent again, and the replies come back in the order of the calls."""
    async with _admin(fresh_redis.url) as admin:
        for runner in await _runners(fresh_redis.url):
            key = f"count:{{{secrets.token_hex(4)}}}"
            await admin.script_flush()
            await admin.script_load(COUNT.source)
            calls = [(COUNT, [key], []), (ECHO, [key], ["a"]), (COUNT, [key], []),
                     (ECHO, [key], ["b"])]  # fmt: skip
            assert await runner.run(calls, await runner.identify()) == [1, b"a", 2, b"b"]
            assert await admin.get(key) == b"2", type(runner).__name__
            await runner.close()


async def test_a_batch_refused_whole_runs_each_call_once(fresh_redis: RedisServer) -> None:
    async with _admin(fresh_redis.url) as admin:
        for runner in await _runners(fresh_redis.url):
            key = f"count:{{{secrets.token_hex(4)}}}"
            for round_ in range(5):
                await admin.script_flush()
                replies = await runner.run([(COUNT, [key], [])] * 3, await runner.identify())
                assert replies == [3 * round_ + 1, 3 * round_ + 2, 3 * round_ + 3]
            await runner.close()


async def test_a_new_connection_loads_every_known_script(fresh_redis: RedisServer) -> None:
    """A restarted or promoted server has no scripts: the connection loads them all before
    the first call, so no batch is refused in part after a restart."""
    client = connect(RedisSettings(url=fresh_redis.url))
    runner = WireScripts(client, 2.0)
    try:
        await runner.identify()
        async with _admin(fresh_redis.url) as admin:
            assert await admin.script_exists(COUNT.sha, ECHO.sha) == [True, True]
    finally:
        await runner.close()
        await client.aclose()


async def test_the_saver_and_the_lease_under_a_flushing_script_cache(
    fresh_redis: RedisServer,
) -> None:
    """Turns under ``lock_thread`` while another client flushes the script cache every
    millisecond: the tier's reads, publications and withdrawals and the lease's acquire,
    confirm, renew and release calls are refused again and again, and still each runs once.
    Counted: the epoch counter and the thread's write sequence move by exactly one per lease
    (its acquisition), the cache generation never (every release published cleanly), and every
    turn is stored."""
    prefix = unique_prefix()
    turns = 12
    stop = asyncio.Event()

    async def flush_forever() -> int:
        flushes = 0
        async with _admin(fresh_redis.url) as admin:
            while not stop.is_set():
                await admin.script_flush()
                flushes += 1
                await asyncio.sleep(0.001)
        return flushes

    flusher = asyncio.create_task(flush_forever())
    try:
        async with ResilientSaver.from_urls(
            postgres_url=POSTGRES_URL, redis_url=fresh_redis.url, prefix=prefix
        ) as saver:
            graph = chain("step").compile(checkpointer=saver)
            config: Any = {"configurable": {"thread_id": "flushed"}}
            epochs = []
            for _ in range(turns):
                async with saver.lock_thread("flushed", ttl_s=0.3, wait_s=5.0) as lease:
                    epochs.append(lease.epoch)
                    await graph.ainvoke({}, config)
                    await asyncio.sleep(0.12)  # long enough for a renewal
                assert len((await graph.aget_state(config)).values["log"]) == len(epochs)
            stop.set()
            assert await flusher > turns
            assert epochs == list(range(EPOCH_BAND + 1, EPOCH_BAND + 1 + turns))
            async with _admin(fresh_redis.url) as admin:
                counter = await admin.hget(f"{prefix}{{flushed}}:epoch", "n")
                assert int(counter) == EPOCH_BAND + turns
                [seq_key] = [k async for k in admin.scan_iter(f"{prefix}{{flushed}}:*:s")]
                assert int(await admin.get(seq_key)) == turns
                gen_keys = [k async for k in admin.scan_iter(f"{prefix}{{flushed}}:*:g")]
                assert [await admin.get(k) for k in gen_keys] in ([], [b"0"])
    finally:
        stop.set()
        await flusher
        await drop_prefixed_tables(POSTGRES_URL, prefix)


def test_the_shared_breaker_under_a_flushed_script_cache(fresh_redis: RedisServer) -> None:
    """The shared breaker's scripts: with the cache flushed before every call, the breaker
    opens at its fourth failure, not earlier (a script run twice would count twice)."""
    admin = redis.Redis.from_url(fresh_redis.url)
    breaker = CircuitBreaker(
        "flushed",
        redis_url=fresh_redis.url,
        redis_prefix=unique_prefix(),
        minimum_calls=4,
        window_size=10,
        failure_rate_threshold=0.5,
        open_for_s=30,
    )
    try:
        for failures in range(1, 5):
            admin.script_flush()
            permit = breaker.acquire("node")
            admin.script_flush()
            breaker.on_failure(permit, ConnectionError("down"), 0.001)
            expected = CircuitState.OPEN if failures == 4 else CircuitState.CLOSED
            admin.script_flush()
            assert breaker.state is expected, failures
    finally:
        admin.close()
