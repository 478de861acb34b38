"""One behavioural suite, run against LangGraph's own ``InMemoryCache`` (the reference) and
``TieredCache`` in-process, over Redis, and over Redis with no in-process level (every read
answered by Redis): get/set, copies, TTL expiry, overwrites, namespaces, clear, and a real
graph whose node has a ``cache_policy``, sync and async."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, TypedDict

import pytest
from langgraph.cache.base import BaseCache
from langgraph.cache.memory import InMemoryCache
from langgraph.graph import START, StateGraph
from langgraph.types import CachePolicy

from langgraph_resilient import TieredCache
from tests.node_cache.conftest import CacheFactory

NS_A = ("__pregel_ns_writes", "tests.nodes:expensive", "expensive")
NS_B = ("__pregel_ns_writes", "tests.nodes:other", "other")
# what the serde gives back for a node's writes (msgpack turns the tuples into lists)
VALUE = deque([["answer", {"text": "forty-two", "scores": [1, 2.5, None]}], ["n", 3]])

KINDS = ["in_memory", "tiered_local", "tiered_redis", "tiered_redis_only"]


@pytest.fixture(params=KINDS)
def cache(request: pytest.FixtureRequest, make_tiered: CacheFactory) -> BaseCache[Any]:
    kind = request.param
    if kind == "in_memory":
        return InMemoryCache()
    if kind == "tiered_local":
        return TieredCache()
    if kind == "tiered_redis":
        return make_tiered()
    return make_tiered(max_bytes=0)  # no L1: every read goes to Redis


def test_missing_keys_and_empty_requests(cache: BaseCache[Any]) -> None:
    assert cache.get([]) == {}
    assert cache.get([(NS_A, "nope")]) == {}


def test_set_then_get_returns_equal_copies(cache: BaseCache[Any]) -> None:
    cache.set({(NS_A, "k1"): (VALUE, None), (NS_A, "k2"): ("plain", 60)})
    got = cache.get([(NS_A, "k1"), (NS_A, "k2"), (NS_A, "absent")])
    assert got == {(NS_A, "k1"): VALUE, (NS_A, "k2"): "plain"}
    got[(NS_A, "k1")][0][1]["text"] = "changed by the caller"
    assert cache.get([(NS_A, "k1")])[(NS_A, "k1")] == VALUE, "each get is a fresh copy"


def test_overwrite_keeps_the_latest(cache: BaseCache[Any]) -> None:
    cache.set({(NS_A, "k"): ("first", None)})
    cache.set({(NS_A, "k"): ("second", None)})
    assert cache.get([(NS_A, "k")]) == {(NS_A, "k"): "second"}


def test_namespaces_are_separate(cache: BaseCache[Any]) -> None:
    cache.set({(NS_A, "k"): ("in a", None), (NS_B, "k"): ("in b", None)})
    assert cache.get([(NS_A, "k"), (NS_B, "k")]) == {(NS_A, "k"): "in a", (NS_B, "k"): "in b"}


def test_ttl_expiry(cache: BaseCache[Any]) -> None:
    cache.set({(NS_A, "short"): ("soon gone", 1), (NS_A, "long"): ("stays", 60)})
    assert cache.get([(NS_A, "short")]) == {(NS_A, "short"): "soon gone"}
    time.sleep(1.2)
    assert cache.get([(NS_A, "short"), (NS_A, "long")]) == {(NS_A, "long"): "stays"}


def test_clear_namespaces_then_everything(cache: BaseCache[Any]) -> None:
    cache.set({(NS_A, "k"): ("a", None), (NS_B, "k"): ("b", None)})
    cache.clear([NS_A])
    assert cache.get([(NS_A, "k"), (NS_B, "k")]) == {(NS_B, "k"): "b"}
    cache.set({(NS_A, "k"): ("a again", None)})
    assert cache.get([(NS_A, "k")]) == {(NS_A, "k"): "a again"}, "a cleared namespace is usable"
    cache.clear()
    assert cache.get([(NS_A, "k"), (NS_B, "k")]) == {}


async def test_async_methods(cache: BaseCache[Any]) -> None:
    await cache.aset({(NS_A, "k"): (VALUE, 60), (NS_B, "k"): ("b", None)})
    assert await cache.aget([(NS_A, "k"), (NS_B, "k")]) == {(NS_A, "k"): VALUE, (NS_B, "k"): "b"}
    await cache.aclear([NS_B])
    assert await cache.aget([(NS_A, "k"), (NS_B, "k")]) == {(NS_A, "k"): VALUE}
    await cache.aclear()
    assert await cache.aget([(NS_A, "k")]) == {}


class State(TypedDict, total=False):
    question: str
    answer: str


def _graph(cache: BaseCache[Any], calls: list[str]) -> Any:
    def expensive(state: State) -> State:
        calls.append(state["question"])
        return {"answer": state["question"].upper()}

    builder: StateGraph[Any, Any, Any, Any] = StateGraph(State)
    builder.add_node("expensive", expensive, cache_policy=CachePolicy(ttl=60))
    builder.add_edge(START, "expensive")
    return builder.compile(cache=cache)


def test_graph_node_cache_policy_hits(cache: BaseCache[Any]) -> None:
    calls: list[str] = []
    graph = _graph(cache, calls)
    assert graph.invoke({"question": "why"}) == {"question": "why", "answer": "WHY"}
    assert graph.invoke({"question": "why"}) == {"question": "why", "answer": "WHY"}
    assert calls == ["why"], "the second run was served by the cache"
    graph.invoke({"question": "how"})
    assert calls == ["why", "how"], "another input is another key"
    graph.clear_cache()
    graph.invoke({"question": "why"})
    assert calls == ["why", "how", "why"], "clear_cache() empties the node's namespace"


async def test_graph_node_cache_policy_hits_async(cache: BaseCache[Any]) -> None:
    calls: list[str] = []
    graph = _graph(cache, calls)
    results = [await graph.ainvoke({"question": q}) for q in ("why", "why", "how", "why")]
    assert [r["answer"] for r in results] == ["WHY", "WHY", "HOW", "WHY"]
    assert calls == ["why", "how"]
    await graph.aclear_cache()
    await asyncio.gather(graph.ainvoke({"question": "why"}))
    assert calls == ["why", "how", "why"]
