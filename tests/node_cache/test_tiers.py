"""TieredCache's Redis level against real servers: replicas share entries and clears, Redis
stopped or frozen never fails a node (and is used again once it answers), corrupt entries are
dropped, encryption leaves no plaintext, TTLs hold on both levels, bad input is refused, and
the key layout works on Redis Cluster."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypedDict

import pytest
import redis
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import START, StateGraph
from langgraph.types import CachePolicy

from langgraph_resilient import (
    ConfigurationError,
    SaverClosedError,
    SerializationError,
    SyncCallOnEventLoopError,
    TieredCache,
    TierUnavailableError,
)
from tests.conftest import REDIS_URL
from tests.node_cache.conftest import CacheFactory
from tests.servers import RedisClusterServers, RedisServer, running

NS = ("__pregel_ns_writes", "tests.nodes:secret-node", "secret-node")
OTHER = ("__pregel_ns_writes", "tests.nodes:other-node", "other-node")


def _until(check: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        time.sleep(0.02)


def _entries(url: str, prefix: str) -> dict[bytes, bytes]:
    """Every value the caches of this test hold in Redis, by key (generation keys included)."""
    client = redis.Redis.from_url(url)
    try:
        return {k: client.get(k) or b"" for k in client.scan_iter(match=f"{prefix}*")}
    finally:
        client.close()


class State(TypedDict, total=False):
    question: str
    answer: str


def _graph(cache: TieredCache[Any], calls: list[str]) -> Any:
    def expensive(state: State) -> State:
        calls.append(state["question"])
        return {"answer": state["question"].upper()}

    builder: StateGraph[Any, Any, Any, Any] = StateGraph(State)
    builder.add_node("expensive", expensive, cache_policy=CachePolicy(ttl=300))
    builder.add_edge(START, "expensive")
    return builder.compile(cache=cache)


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    yield from running(RedisServer())


def test_replicas_share_entries_through_redis(make_tiered: CacheFactory) -> None:
    calls: list[str] = []
    first, second = _graph(make_tiered(), calls), _graph(make_tiered(), calls)
    assert first.invoke({"question": "q"})["answer"] == "Q"
    assert second.invoke({"question": "q"})["answer"] == "Q"
    assert calls == ["q"], "the second replica's node was served from Redis"


def test_a_redis_hit_fills_l1(private_redis: RedisServer, make_tiered: CacheFactory) -> None:
    writer, reader = make_tiered(private_redis.url), make_tiered(private_redis.url)
    writer.set({(NS, "k"): ("shared", None)})
    assert reader.get([(NS, "k")]) == {(NS, "k"): "shared"}
    private_redis.stop()
    assert reader.get([(NS, "k")]) == {(NS, "k"): "shared"}, "served by the reader's L1"
    assert writer.get([(NS, "k")]) == {(NS, "k"): "shared"}, "and by the writer's"


@pytest.mark.parametrize("fault", ["frozen", "stopped"])
def test_redis_down_never_fails_a_node(
    fault: str, private_redis: RedisServer, make_tiered: CacheFactory
) -> None:
    cache = make_tiered(private_redis.url, socket_timeout_s=0.05)
    calls: list[str] = []
    graph = _graph(cache, calls)
    assert graph.invoke({"question": "before"})["answer"] == "BEFORE"
    private_redis.freeze() if fault == "frozen" else private_redis.stop()
    started = time.monotonic()
    for question in ("before", "during", "during", "other", "during"):
        assert graph.invoke({"question": question})["answer"] == question.upper()
    assert time.monotonic() - started < 5, "Redis failures cost a bounded time"
    assert calls == ["before", "during", "other"], "L1 alone kept serving"
    assert cache.breaker.is_open

    if fault == "frozen":
        private_redis.thaw()
    else:
        private_redis.start()  # an empty server on the same port
    replica = make_tiered(private_redis.url)

    def shared() -> bool:  # the probe after the open time (0.2 s) brings Redis back
        cache.set({(NS, "after"): ("back", None)})
        return replica.get([(NS, "after")]) == {(NS, "after"): "back"}

    _until(shared, "the cache uses Redis again")
    assert not cache.breaker.is_open


def test_clear_reaches_the_l1_of_other_replicas(make_tiered: CacheFactory) -> None:
    a, b = make_tiered(refresh_interval_s=0.1), make_tiered(refresh_interval_s=0.1)
    a.set({(NS, "k"): ("v", None), (OTHER, "k"): ("kept", None)})
    assert b.get([(NS, "k"), (OTHER, "k")]) == {(NS, "k"): "v", (OTHER, "k"): "kept"}
    a.clear([NS])
    _until(lambda: b.get([(NS, "k")]) == {}, "B's L1 entry is gone after A's clear")
    assert b.get([(OTHER, "k")]) == {(OTHER, "k"): "kept"}
    a.clear()
    _until(lambda: b.get([(OTHER, "k")]) == {}, "clear() of everything reaches B too")


def test_clear_during_an_outage_is_applied_when_redis_answers(
    private_redis: RedisServer, make_tiered: CacheFactory
) -> None:
    url = private_redis.url
    a = make_tiered(url, socket_timeout_s=0.05, refresh_interval_s=0.1)
    b = make_tiered(url, refresh_interval_s=0.1)
    a.set({(NS, "k"): ("old", None)})
    assert b.get([(NS, "k")]) == {(NS, "k"): "old"}
    private_redis.freeze()
    a.clear([NS])
    assert a.get([(NS, "k")]) == {}, "cleared here at once"
    private_redis.thaw()
    cold = make_tiered(url, max_bytes=0)
    _until(lambda: cold.get([(NS, "k")]) == {}, "A's clear reaches Redis once it answers")
    _until(lambda: b.get([(NS, "k")]) == {}, "and B's L1")


def test_corrupt_or_foreign_entries_are_dropped(
    make_tiered: CacheFactory, cache_prefix: str
) -> None:
    writer = make_tiered()
    writer.set({(NS, f"k{i}"): (f"value {i}", None) for i in range(3)})
    client = redis.Redis.from_url(REDIS_URL)
    keys = sorted(k for k in _entries(REDIS_URL, cache_prefix) if not k.endswith(b":g"))
    assert len(keys) == 3
    garbage = [b"foreign bytes", b"LGRN1msgpack-without-separator", b"LGRN1msgpack\0\xc1\xff\x00"]
    for key, value in zip(keys, garbage, strict=True):
        client.set(key, value)
    reader = make_tiered(max_bytes=0)
    assert reader.get([(NS, f"k{i}") for i in range(3)]) == {}
    assert client.exists(*keys) == 0, "the undecodable entries were deleted"
    client.close()
    assert writer.get([(NS, "k1")]) == {(NS, "k1"): "value 1"}, "the writer's L1 is its own"


def test_encryption_leaves_no_plaintext_in_redis(
    make_tiered: CacheFactory, cache_prefix: str
) -> None:
    secret = {"answer": "TOP-SECRET-ANSWER"}
    make_tiered().set({(NS, "question-key"): (secret, None)})
    stored = _entries(REDIS_URL, cache_prefix)
    assert any(b"TOP-SECRET-ANSWER" in v for v in stored.values()), "the check can fail"

    prefix = cache_prefix + "e"  # its own keys (deleted with the test's prefix)
    serde = EncryptedSerializer.from_pycryptodome_aes(key=b"0123456789abcdef")
    make_tiered(serde=serde, prefix=prefix).set({(NS, "question-key"): (secret, None)})
    stored = _entries(REDIS_URL, prefix)
    assert stored, "something was written"
    for key, value in stored.items():
        assert b"TOP-SECRET-ANSWER" not in value
        assert b"secret-node" not in key and b"question-key" not in key, key
    same_key = make_tiered(serde=serde, prefix=prefix, max_bytes=0)
    assert same_key.get([(NS, "question-key")]) == {(NS, "question-key"): secret}
    wrong = EncryptedSerializer.from_pycryptodome_aes(key=b"fedcba9876543210")
    assert make_tiered(serde=wrong, prefix=prefix, max_bytes=0).get([(NS, "question-key")]) == {}


def test_ttls_in_redis(make_tiered: CacheFactory, cache_prefix: str) -> None:
    cache = make_tiered(key_ttl_s=3600)
    started = time.monotonic()
    cache.set({(NS, "short"): ("s", 30), (NS, "forever"): ("f", None)})
    client = redis.Redis.from_url(REDIS_URL)
    ttls = sorted(
        client.pttl(k) for k in _entries(REDIS_URL, cache_prefix) if not k.endswith(b":g")
    )
    client.close()
    elapsed_ms = (time.monotonic() - started) * 1000 + 1  # PTTL rounds to the millisecond
    assert 30_000 - elapsed_ms <= ttls[0] <= 30_000, "the entry's own TTL"
    assert 3_600_000 - elapsed_ms <= ttls[1] <= 3_600_000, "ttl=None: key_ttl_s in Redis"


def test_an_entry_copied_from_redis_keeps_the_time_it_had_left(
    private_redis: RedisServer, make_tiered: CacheFactory
) -> None:
    writer, reader = make_tiered(private_redis.url), make_tiered(private_redis.url)
    writer.set({(NS, "k"): ("v", 2)})
    time.sleep(1.0)
    assert reader.get([(NS, "k")]) == {(NS, "k"): "v"}  # into L1 with about 1 s left
    private_redis.stop()  # from now on only L1 answers
    assert reader.get([(NS, "k")]) == {(NS, "k"): "v"}
    time.sleep(1.2)
    assert reader.get([(NS, "k")]) == {}, "expired with the time Redis had left it, not 2 s"


def test_bad_input_is_refused_and_nothing_is_cached(make_tiered: CacheFactory) -> None:
    cache = make_tiered()
    for ttl in (0, -5, "10", True):
        with pytest.raises(ConfigurationError, match="TTL must be a positive number"):
            cache.set({(NS, "good"): ("v", None), (NS, "bad"): ("v", ttl)})  # type: ignore[dict-item]
    with pytest.raises(SerializationError, match="cannot serialize the cached value"):
        cache.set({(NS, "good"): ("v", None), (NS, "bad"): (threading.Lock(), None)})
    assert cache.get([(NS, "good"), (NS, "bad")]) == {}
    assert make_tiered(max_bytes=0).get([(NS, "good")]) == {}, "nor in Redis"

    with pytest.raises(ConfigurationError, match="max_bytes"):
        TieredCache(max_bytes=-1)
    with pytest.raises(ConfigurationError, match="prefix"):
        TieredCache(prefix="Not-A-Prefix")
    with pytest.raises(ConfigurationError, match="redis_url"):
        TieredCache.from_url("http://127.0.0.1:6379")
    with pytest.raises(ConfigurationError, match="refresh_interval_s"):
        TieredCache.from_url(REDIS_URL, refresh_interval_s=0)
    with pytest.raises(SaverClosedError, match="not open"):
        TieredCache.from_url(REDIS_URL).get([(NS, "k")])


def test_redis_required_or_started_without_it(make_tiered: CacheFactory) -> None:
    server = RedisServer()  # not started: nothing listens on its port
    try:
        with pytest.raises(TierUnavailableError, match="redis: cannot connect"):
            TieredCache.from_url(server.url, redis_required=True).__enter__()
        cache = make_tiered(server.url)
        cache.set({(NS, "k"): ("local", None)})
        assert cache.get([(NS, "k")]) == {(NS, "k"): "local"}, "in-process only meanwhile"
        server.start()
        replica = make_tiered(server.url)

        def shared() -> bool:
            cache.set({(NS, "k2"): ("shared", None)})
            return replica.get([(NS, "k2")]) == {(NS, "k2"): "shared"}

        _until(shared, "the cache uses Redis once it answers")
    finally:
        server.stop()


def test_small_l1_evicts_the_least_recently_used() -> None:
    cache: TieredCache[Any] = TieredCache(max_bytes=3_000)
    for i in range(10):
        cache.set({(NS, f"k{i}"): ("x" * 1_000, None)})
    held = cache.get([(NS, f"k{i}") for i in range(10)])
    assert set(held) == {(NS, "k8"), (NS, "k9")}, "bounded in bytes, newest kept"


async def test_async_with_on_the_callers_loop(cache_prefix: str) -> None:
    async with TieredCache.from_url(REDIS_URL, prefix=cache_prefix) as cache:
        calls: list[str] = []
        graph = _graph(cache, calls)
        assert (await graph.ainvoke({"question": "q"}))["answer"] == "Q"
        assert (await graph.ainvoke({"question": "q"}))["answer"] == "Q"
        assert calls == ["q"]
        cold = TieredCache.from_url(REDIS_URL, prefix=cache_prefix, max_bytes=0)
        with cold:  # another replica, sync, its own loop thread
            assert await asyncio.to_thread(graph.invoke, {"question": "q"}) == {
                "question": "q",
                "answer": "Q",
            }
            assert await cold.aget([(NS, "absent")]) == {}, "async calls hop to its loop"
        with pytest.raises(SyncCallOnEventLoopError):
            cache.get([(NS, "absent")])  # a blocking Redis call on the cache's own loop


@pytest.fixture
def cluster() -> Iterator[RedisClusterServers]:
    yield from running(RedisClusterServers(3))


def test_on_redis_cluster(cluster: RedisClusterServers, make_tiered: CacheFactory) -> None:
    url = f"redis+cluster://127.0.0.1:{cluster.ports[0]}"
    namespaces = [("__pregel_ns_writes", f"tests.nodes:n{i}", f"n{i}") for i in range(6)]
    a = make_tiered(url, refresh_interval_s=0.1)
    b = make_tiered(url, refresh_interval_s=0.1)
    a.set({(ns, "k"): (ns[2], None) for ns in namespaces})  # one call, many slots
    everything = {(ns, "k"): ns[2] for ns in namespaces}
    assert b.get([(ns, "k") for ns in namespaces]) == everything
    per_node = [
        sum(1 for _ in redis.Redis(port=port).scan_iter(match="t*nc:*")) for port in cluster.ports
    ]
    assert sum(1 for n in per_node if n) >= 2, f"the namespaces spread over the nodes: {per_node}"
    a.clear([namespaces[0]])
    _until(lambda: b.get([(namespaces[0], "k")]) == {}, "a clear reaches B")
    a.clear()
    cold = make_tiered(url, max_bytes=0)
    assert cold.get([(ns, "k") for ns in namespaces]) == {}, "clear() scanned every node"


class RefusesOnLoad(JsonPlusSerializer):
    """A serde that writes every value but refuses to read some back (as a strict allowlist
    that raises would)."""

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        value = super().loads_typed(data)
        if "REFUSED" in repr(value):  # the answer of the question "refused"
            raise ValueError("refused by the allowlist")
        return value


@pytest.mark.parametrize("level", ["in-process", "redis"])
def test_an_entry_the_serde_will_not_read_is_a_miss(level: str, make_tiered: CacheFactory) -> None:
    cache = make_tiered(serde=RefusesOnLoad(), max_bytes=0 if level == "redis" else 1 << 20)
    calls: list[str] = []
    graph = _graph(cache, calls)
    for _ in range(2):
        assert graph.invoke({"question": "refused"})["answer"] == "REFUSED"
        assert graph.invoke({"question": "fine"})["answer"] == "FINE"
    assert calls == ["refused", "fine", "refused"], "the refused entry ran the node again"
