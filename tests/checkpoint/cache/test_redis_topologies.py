"""The Redis tier on every accepted URL form against real servers: Sentinel
(``redis+sentinel://``), Cluster (``redis+cluster://``) and TLS (``rediss://``).

Each test starts its own servers on free loopback ports, runs a graph on several threads
through a saver that requires Redis, and checks that the state is right, that the tier really
wrote to Redis (keys under the test's prefix, on the servers of that topology), that no Redis
call failed, and that a head read is served by the cache tiers (also by a second replica whose
in-process cache is cold, so it can only have come from Redis).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio
from prometheus_client import REGISTRY

from langgraph_resilient import ResilientSaver, TierUnavailableError
from langgraph_resilient._redis.wire import PipelineScripts, WireScripts
from tests.conftest import POSTGRES_URL
from tests.graphs import final_states, run_turns, turn_graph
from tests.servers import (
    RedisClusterServers,
    RedisSentinelServers,
    TlsRedisServer,
    _redis_cli,
    _wait_until,
    running,
)

TURNS = 3


def _metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def _hits() -> float:
    return _metric("langgraph_checkpoint_cache_reads_total", {"result": "hit"})


def _redis_failures() -> float:
    return _metric("langgraph_checkpoint_redis_failures_total")


def _expected_turns() -> list[str]:
    return [x for turn in range(TURNS) for x in (f"user {turn}", f"reply {2 * turn + 1}")]


async def _keys(client: Any, prefix: str) -> list[str]:
    """Every key under ``prefix`` on one server."""
    try:
        return [k.decode() async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
    finally:
        await client.aclose()


def _threads_with_keys(keys: list[str], prefix: str, threads: int) -> set[str]:
    """The thread ids (``t0``...) that own at least one of ``keys``."""
    return {f"t{t}" for t in range(threads) for k in keys if k.startswith(f"{prefix}{{t{t}}}:")}


async def _run_on(
    redis_url: str, prefix: str, threads: int, runner: type[Any], **kwargs: Any
) -> None:
    """Run the graph through a saver that requires ``redis_url``; check the state, the cache
    hits (warm replica, then a cold one) and that no Redis call failed."""
    saver_kwargs: dict[str, Any] = {
        "postgres_url": POSTGRES_URL,
        "redis_url": redis_url,
        "prefix": prefix,
        "redis_required": True,
        **kwargs,
    }
    failures = _redis_failures()
    expected = _expected_turns()
    async with ResilientSaver.from_urls(**saver_kwargs) as saver:
        tier = saver.tiers.redis
        assert tier is not None and saver.redis is not None
        assert isinstance(tier.link._scripts, runner), type(tier.link._scripts)
        graph = turn_graph().compile(checkpointer=saver)
        await run_turns(graph, threads, range(TURNS))
        assert await final_states(graph, threads) == [expected] * threads

        for t in range(threads):
            hits = _hits()
            head = await saver.aget_tuple({"configurable": {"thread_id": f"t{t}"}})
            assert head is not None and head.checkpoint["channel_values"]["log"] == expected
            assert _hits() == hits + 1, f"a warm head read of t{t} is a cache hit"
        assert not tier.breaker.is_open

    # A second replica: its in-process cache is empty, so its hits come from Redis itself.
    async with ResilientSaver.from_urls(**saver_kwargs) as cold:
        assert cold.tiers.redis is not None
        for t in range(threads):
            hits = _hits()
            head = await cold.aget_tuple({"configurable": {"thread_id": f"t{t}"}})
            assert head is not None and head.checkpoint["channel_values"]["log"] == expected
            assert _hits() == hits + 1, f"a cold replica's head read of t{t} is served by Redis"
        assert not cold.tiers.redis.breaker.is_open
    assert _redis_failures() == failures, "no Redis call failed"


@pytest.fixture
def sentinel_with_replica() -> Iterator[RedisSentinelServers]:
    yield from running(RedisSentinelServers("mymaster", replica=True, down_after_ms=1000))


@pytest.fixture
def tls_redis() -> Iterator[TlsRedisServer]:
    yield from running(TlsRedisServer())


async def test_sentinel_url_finds_the_master_and_caches_there(
    sentinel: RedisSentinelServers, prefix: str
) -> None:
    threads = 2
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster/0"
    await _run_on(url, prefix, threads, WireScripts)

    keys = await _keys(redis.asyncio.Redis.from_url(sentinel.master.url), prefix)
    assert keys, "the tier wrote to the master the sentinel named"
    assert _threads_with_keys(keys, prefix, threads) == {"t0", "t1"}


async def test_sentinel_url_selects_the_database_it_names(
    sentinel: RedisSentinelServers, prefix: str
) -> None:
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster/3"
    await _run_on(url, prefix, 1, WireScripts)

    master = f"redis://127.0.0.1:{sentinel.master.port}"
    assert await _keys(redis.asyncio.Redis.from_url(f"{master}/0"), prefix) == []
    keys = await _keys(redis.asyncio.Redis.from_url(f"{master}/3"), prefix)
    assert _threads_with_keys(keys, prefix, 1) == {"t0"}, "keys are in db 3, as the URL says"


def _fail_over(servers: RedisSentinelServers) -> None:
    """``SENTINEL FAILOVER``; returns once the Sentinel names the replica as the master and
    the old master has been turned into a replica."""
    replica = servers.replica
    assert replica is not None
    assert servers.sentinel("FAILOVER", servers.service).strip() == "OK"
    _wait_until(
        lambda: servers.master_port() == replica.port,
        "the sentinel does not name the replica as the master",
    )
    _wait_until(
        lambda: "role:slave" in _redis_cli(servers.master.port, "INFO", "replication"),
        "the old master was not demoted to a replica",
    )


async def _invoke_turns(graph: Any, thread_ids: list[str], turns: range, failed: list[str]) -> None:
    """Like ``_run_turns``, but a failed invocation is recorded in ``failed``, not raised."""
    for turn in turns:
        for thread_id in thread_ids:
            config = {"configurable": {"thread_id": thread_id}}
            try:
                await graph.ainvoke({"log": [f"user {turn}"]}, config)
            except Exception as exc:
                failed.append(f"{thread_id} turn {turn}: {type(exc).__name__}: {exc}")


def _turns(count: int) -> list[str]:
    return [x for turn in range(count) for x in (f"user {turn}", f"reply {2 * turn + 1}")]


@pytest.mark.fault
async def test_sentinel_failover_mid_run_no_invocation_fails_and_redis_is_used_again(
    sentinel_with_replica: RedisSentinelServers, prefix: str
) -> None:
    """A Sentinel failover between turns. The saver's connection was to the old master: the
    Sentinel closes its clients when it demotes it (one that stayed would be answered READONLY),
    so the saver must connect again and ask the Sentinel for the new master. No invocation
    fails, the state is exact, and the tier caches on the new master again, with heads there
    that a replica with a cold in-process cache reads as the latest state.

    Turns run only before and after the failover; the next test runs them across it."""
    servers = sentinel_with_replica
    assert servers.replica is not None
    old, new = servers.master, servers.replica
    early = ["t0", "t1", "t2"]  # run before, across and after the failover
    late = ["t3"]  # first used after the failover: its keys can only come from the new master
    failed: list[str] = []
    async with ResilientSaver.from_urls(
        postgres_url=POSTGRES_URL,
        redis_url=f"redis+sentinel://127.0.0.1:{servers.port}/mymaster/0",
        prefix=prefix,
        redis_required=True,
    ) as saver:
        tier = saver.tiers.redis
        assert tier is not None and isinstance(tier.link._scripts, WireScripts)
        graph = turn_graph().compile(checkpointer=saver)
        await _invoke_turns(graph, early, range(3), failed)
        before = await _keys(redis.asyncio.Redis(host="127.0.0.1", port=old.port), prefix)
        assert _threads_with_keys(before, prefix, 4) == set(early), "cached on the old master"

        old_server = tier.link.server
        assert old_server is not None
        started = time.monotonic()
        await asyncio.to_thread(_fail_over, servers)
        failover_s = time.monotonic() - started
        failures = _redis_failures()
        await _invoke_turns(graph, early, range(3, 6), failed)
        failures_after_failover = _redis_failures() - failures
        if tier.breaker.is_open:
            await asyncio.sleep(tier.breaker.open_for_s)
        await _invoke_turns(graph, early, range(6, 9), failed)
        await _invoke_turns(graph, late, range(3), failed)
        assert failed == [], "no invocation fails"
        assert not tier.breaker.is_open, (
            f"Redis is used again after the failover ({failover_s:.1f} s; "
            f"{failures_after_failover} Redis failures right after it)"
        )
        states = await final_states(graph, 4)
    assert states == [_turns(9)] * 3 + [_turns(3)], "state identical to a run without the fault"

    after = await _keys(redis.asyncio.Redis(host="127.0.0.1", port=new.port), prefix)
    assert _threads_with_keys(after, prefix, 4) == {*early, *late}, "cached on the new master"
    # The copies of the old master's entries that the promoted replica held were swept.
    assert not [k for k in after if f":{old_server}:" in k], "no entry of the old server is left"

    # A cold replica (empty in-process cache) finds the new master too, and its head reads are
    # served by Redis with the latest state: nothing cached there is stale.
    async with ResilientSaver.from_urls(
        postgres_url=POSTGRES_URL, redis_url=servers.url(), prefix=prefix, redis_required=True
    ) as cold:
        assert cold.tiers.redis is not None
        for thread_id, expected in zip([*early, *late], [_turns(9)] * 3 + [_turns(3)], strict=True):
            hits = _hits()
            head = await cold.aget_tuple({"configurable": {"thread_id": thread_id}})
            assert head is not None and head.checkpoint["channel_values"]["log"] == expected
            assert _hits() == hits + 1, f"a cold replica's head read of {thread_id} is a hit"
        assert not cold.tiers.redis.breaker.is_open


@pytest.mark.fault
async def test_turns_running_across_a_failover_never_continue_from_a_lost_head(
    sentinel_with_replica: RedisSentinelServers, prefix: str
) -> None:
    """Turns run without pause while the Sentinel fails over. Between the promotion and the
    demotion the old master still acknowledges the tier's writes; the demotion throws them away
    (asynchronous replication), so the new master's cached heads are older than Postgres. The
    tier sees another server identity when it connects again and starts from an empty cache
    there: every invocation still sees every turn before it."""
    servers = sentinel_with_replica
    threads = ["t0", "t1"]
    done = {t: 0 for t in threads}
    wrong: list[str] = []
    async with ResilientSaver.from_urls(
        postgres_url=POSTGRES_URL, redis_url=servers.url(), prefix=prefix, redis_required=True
    ) as saver:
        graph = turn_graph().compile(checkpointer=saver)

        async def turn(thread_id: str) -> None:
            n = done[thread_id]
            config = {"configurable": {"thread_id": thread_id}}
            state = await graph.ainvoke({"log": [f"user {n}"]}, config)
            done[thread_id] = n + 1
            if state["log"] != _turns(n + 1):
                wrong.append(f"{thread_id} turn {n}: saw {len(state['log']) // 2} turns")

        for _ in range(3):
            for thread_id in threads:
                await turn(thread_id)
        failover = asyncio.create_task(asyncio.to_thread(_fail_over, servers))
        while not failover.done():
            for thread_id in threads:
                await turn(thread_id)
        await failover
        for _ in range(5):
            for thread_id in threads:
                await turn(thread_id)
        assert min(done.values()) > 10, "turns ran across the failover"
        assert wrong == [], "an invocation continued from a head older than the last turn"
        assert await final_states(graph, 2) == [_turns(done["t0"]), _turns(done["t1"])]


async def test_cluster_url_spreads_threads_over_the_nodes(
    cluster: RedisClusterServers, prefix: str
) -> None:
    threads = 6  # t0..t5 hash to slots owned by all three nodes
    url = f"redis+cluster://127.0.0.1:{cluster.ports[0]}"
    await _run_on(url, prefix, threads, PipelineScripts)

    per_node = {
        port: await _keys(redis.asyncio.Redis(host="127.0.0.1", port=port), prefix)
        for port in cluster.ports
    }
    threads_on = {
        port: _threads_with_keys(keys, prefix, threads) for port, keys in per_node.items()
    }
    nodes_of = {
        f"t{t}": {p for p, on in threads_on.items() if f"t{t}" in on} for t in range(threads)
    }
    # a thread's keys share its {thread_id} hash tag: all on the one node that owns its slot
    assert all(len(nodes) == 1 for nodes in nodes_of.values()), nodes_of
    assert set().union(*nodes_of.values()) == set(cluster.ports), "every node holds threads"


async def test_rediss_url_talks_tls_with_the_given_ca(
    tls_redis: TlsRedisServer, prefix: str
) -> None:
    threads = 2
    url = f"rediss://127.0.0.1:{tls_redis.port}/0?ssl_ca_certs={tls_redis.ca_cert}"
    await _run_on(url, prefix, threads, WireScripts)

    client = redis.asyncio.Redis.from_url(url)
    keys = await _keys(client, prefix)
    assert _threads_with_keys(keys, prefix, threads) == {"t0", "t1"}


async def test_rediss_url_verifies_the_server_certificate(
    tls_redis: TlsRedisServer, prefix: str
) -> None:
    """Without the CA the server's certificate is not trusted: a saver that requires Redis
    refuses to start (so the test above really did verify the certificate over TLS)."""
    url = f"rediss://127.0.0.1:{tls_redis.port}/0"
    with pytest.raises(TierUnavailableError) as raised:
        async with ResilientSaver.from_urls(
            postgres_url=POSTGRES_URL, redis_url=url, prefix=prefix, redis_required=True
        ):
            pass
    causes = []
    cause: BaseException | None = raised.value
    while cause is not None:
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    assert any(isinstance(c, ssl.SSLCertVerificationError) for c in causes), causes
