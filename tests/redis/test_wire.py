"""The Redis tier's own RESP pipeline, against real Redis servers.

The shared Redis checks encoding and reply parsing; a private server (``fresh_redis``) is
flushed, stopped and frozen to check script reloading, reconnecting, timeouts and that a caller
who gives up never receives, or steals, another caller's reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError

from langgraph_resilient._redis.client import RedisSettings, connect
from langgraph_resilient._redis.wire import (
    LuaScript,
    PipelineScripts,
    ScriptRunner,
    ServerChanged,
    WireScripts,
    encode_command,
    parse_reply,
    script_runner,
)
from tests.conftest import REDIS_URL
from tests.servers import RedisServer

ECHO = LuaScript("return {KEYS[1], ARGV[1], tonumber(ARGV[2]), false, {ARGV[3]}}")
INCR = LuaScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
FAIL = LuaScript("return redis.error_reply('ERR refused on purpose')")


@pytest.fixture
async def runners() -> AsyncIterator[list[ScriptRunner]]:
    """The wire and the pipeline runner on the shared Redis (the pipeline runner is the one
    Redis Cluster uses; both must answer alike)."""
    client = connect(RedisSettings(url=REDIS_URL))
    made: list[ScriptRunner] = [WireScripts(client, 2.0), PipelineScripts(client, 2.0)]
    try:
        yield made
    finally:
        for runner in made:
            await runner.close()
        async for key in client.scan_iter(match=f"{KEY_PREFIX}*", count=1000):
            await client.delete(key)
        await client.aclose()


KEY_PREFIX = "lgr-wire-test:"


@contextlib.asynccontextmanager
async def _wire(url: str, timeout_s: float) -> AsyncIterator[WireScripts]:
    """A wire runner of its own on ``url``, closed afterwards."""
    client = connect(RedisSettings(url=url))
    runner = WireScripts(client, timeout_s)
    try:
        yield runner
    finally:
        await runner.close()
        await client.aclose()


async def _run(runner: ScriptRunner, calls: list[Any]) -> list[Any]:
    """Calls composed for the server the runner is (or gets) connected to."""
    return await runner.run(calls, await runner.identify())


async def _commands(runner: ScriptRunner, commands: list[Any]) -> list[Any]:
    return await runner.commands(commands, await runner.identify())


def _key() -> str:
    return f"{KEY_PREFIX}{{{secrets.token_hex(4)}}}"


async def test_replies_round_trip_binary_nested_nil_and_integers(
    runners: list[ScriptRunner],
) -> None:
    payload = bytes(range(256)) * 3 + b"\r\n$5\r\n*1\r\n"
    for runner in runners:
        key = _key()
        [reply] = await _run(runner, [(ECHO, [key], [payload, 42, "x"])])
        assert reply == [key.encode(), payload, 42, None, [b"x"]]


async def test_a_large_reply_split_over_many_reads(runners: list[ScriptRunner]) -> None:
    big = secrets.token_bytes(700_000)
    for runner in runners:
        [reply] = await _run(runner, [(ECHO, [_key()], [big, 1, ""])])
        assert reply[1] == big


async def test_many_calls_in_one_round_trip_keep_their_order(runners: list[ScriptRunner]) -> None:
    for runner in runners:
        key = _key()
        replies = await _run(runner, [(INCR, [key], [i]) for i in range(1, 101)])
        assert replies == [i * (i + 1) // 2 for i in range(1, 101)]


async def test_concurrent_callers_each_get_their_own_replies(runners: list[ScriptRunner]) -> None:
    for runner in runners:
        keys = [_key() for _ in range(50)]

        async def caller(runner: ScriptRunner, key: str, n: int) -> list[Any]:
            return await _run(runner, [(ECHO, [key], [f"v{n}", n, key])])

        replies = await asyncio.gather(*(caller(runner, k, n) for n, k in enumerate(keys)))
        for n, (key, [reply]) in enumerate(zip(keys, replies, strict=True)):
            assert reply == [key.encode(), f"v{n}".encode(), n, None, [key.encode()]]


async def test_an_error_reply_raises_after_every_reply_was_read(
    runners: list[ScriptRunner],
) -> None:
    for runner in runners:
        key = _key()
        with pytest.raises(ResponseError, match="refused on purpose"):
            await _run(runner, [(INCR, [key], [1]), (FAIL, [key], []), (INCR, [key], [1])])
        # The connection is still in step: the next call gets its own reply.
        assert await _run(runner, [(INCR, [key], [10])]) == [12]


def test_a_single_server_gets_the_wire_and_a_cluster_the_pipelines() -> None:
    assert isinstance(script_runner(connect(RedisSettings(url=REDIS_URL)), 1.0), WireScripts)
    cluster = connect(RedisSettings(url="redis+cluster://127.0.0.1:7000"))  # not connected yet
    assert isinstance(script_runner(cluster, 1.0), PipelineScripts)


async def test_plain_commands(runners: list[ScriptRunner]) -> None:
    for runner in runners:
        key = _key()
        assert await _commands(runner, [("INCR", key), ("INCR", key), ("GET", key)]) == [1, 2, b"2"]


async def test_scripts_are_reloaded_after_the_server_lost_them(fresh_redis: RedisServer) -> None:
    async with _wire(fresh_redis.url, 2.0) as runner:
        key = _key()
        assert await _run(runner, [(INCR, [key], [1])]) == [1]
        admin = redis.asyncio.Redis.from_url(fresh_redis.url)
        await admin.script_flush()
        await admin.aclose()
        assert await _run(runner, [(INCR, [key], [1]), (INCR, [key], [2])]) == [2, 4]


async def test_a_stopped_server_fails_fast_and_a_restarted_one_is_used_again(
    fresh_redis: RedisServer,
) -> None:
    async with _wire(fresh_redis.url, 2.0) as runner:
        key = _key()
        assert await _run(runner, [(INCR, [key], [1])]) == [1]
        fresh_redis.stop()
        started = time.monotonic()
        for _ in range(2):
            with pytest.raises((RedisConnectionError, OSError)):
                await _run(runner, [(INCR, [key], [1])])
        assert time.monotonic() - started < 1.0, "refused connections fail at once"
        fresh_redis.start()  # empty, and without the scripts
        assert await _run(runner, [(INCR, [key], [5])]) == [5]


async def test_a_frozen_server_times_out_and_the_next_call_reconnects(
    fresh_redis: RedisServer,
) -> None:
    async with _wire(fresh_redis.url, 0.3) as runner:
        key = _key()
        assert await _run(runner, [(INCR, [key], [1])]) == [1]
        fresh_redis.freeze()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await _run(runner, [(INCR, [key], [1])])
        assert time.monotonic() - started < 1.0
        fresh_redis.thaw()
        # The timed-out INCR may have run after the thaw; the new connection sees its effect.
        assert await _run(runner, [(INCR, [key], [0])]) in ([1], [2])


async def test_a_cancelled_caller_neither_gets_nor_steals_a_reply(
    fresh_redis: RedisServer,
) -> None:
    async with _wire(fresh_redis.url, 5.0) as runner:
        key = _key()
        assert await _run(runner, [(INCR, [key], [1])]) == [1]
        fresh_redis.freeze()
        gave_up = asyncio.create_task(_run(runner, [(ECHO, [key], ["first", 1, ""])]))
        await asyncio.sleep(0.05)
        gave_up.cancel()
        later = asyncio.create_task(_run(runner, [(ECHO, [key], ["second", 2, ""])]))
        await asyncio.sleep(0.05)
        fresh_redis.thaw()
        [reply] = await later
        assert reply[1:3] == [b"second", 2]
        assert gave_up.cancelled()


def test_parse_reply_waits_for_a_whole_reply() -> None:
    whole = b"*2\r\n$3\r\nabc\r\n:7\r\n"
    assert parse_reply(whole, 0) == ([b"abc", 7], len(whole))
    for cut in range(1, len(whole)):
        with pytest.raises(Exception) as info:  # the private _Incomplete
            parse_reply(whole[:cut], 0)
        assert type(info.value).__name__ == "_Incomplete"


def test_encode_command_refuses_values_redis_cannot_hold() -> None:
    assert encode_command("SET", "k", 1) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n"
    with pytest.raises(TypeError):
        encode_command("SET", "k", None)
    with pytest.raises(TypeError):
        encode_command("SET", "k", True)


async def test_a_demoted_master_is_left_for_a_new_connection(fresh_redis: RedisServer) -> None:
    """READONLY (a failover made the server a replica) drops the connection, so the next call
    connects afresh (through Sentinel, to the new master)."""
    upstream = RedisServer()
    upstream.start()
    admin = redis.asyncio.Redis.from_url(fresh_redis.url)
    try:
        async with _wire(fresh_redis.url, 2.0) as runner:
            key = _key()
            assert await _run(runner, [(INCR, [key], [1])]) == [1]
            await admin.execute_command("REPLICAOF", "127.0.0.1", str(upstream.port))
            with pytest.raises(ReadOnlyError):
                await _run(runner, [(INCR, [key], [1])])
            connections = (await admin.info("stats"))["total_connections_received"]
            await admin.execute_command("REPLICAOF", "NO", "ONE")
            assert await _run(runner, [(INCR, [key], [1])]) in ([1], [2])
            after = (await admin.info("stats"))["total_connections_received"]
            assert after == connections + 1, "the next call came on a new connection"
    finally:
        await admin.aclose()
        upstream.stop()


async def test_calls_meant_for_a_server_that_was_replaced_are_not_sent(
    fresh_redis: RedisServer,
) -> None:
    """A restart (or a failover) gives the server a new identity; calls composed for the old
    one raise ServerChanged and reach nothing."""
    async with _wire(fresh_redis.url, 2.0) as runner:
        before = await runner.identify()
        key = _key()
        assert await runner.run([(INCR, [key], [1])], before) == [1]
        fresh_redis.stop()
        fresh_redis.start()
        changed: ServerChanged | None = None
        for _ in range(2):  # the first call may still find the old, broken connection
            try:
                await runner.run([(INCR, [key], [1])], before)
            except ServerChanged as exc:
                changed = exc
                break
            except (RedisConnectionError, OSError):
                continue
        assert changed is not None
        after = changed.server_id
        assert after != before and after == runner.server_id
        assert await runner.commands([("GET", key)], after) == [None], "nothing was sent"
