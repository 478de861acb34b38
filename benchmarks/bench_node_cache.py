"""Node cache benchmark: a graph with one cached expensive node, hit and miss cost per
invocation for every cache side by side in one run, plus the bare ``cache.get`` of a hit.

Run:  .venv/bin/python -m benchmarks.bench_node_cache [--quick] [--redis-url URL]
      [--rounds 15] [--invocations 200]

The graph is ``START -> answer`` where ``answer`` has ``cache_policy=CachePolicy(ttl=3600)``
and returns a 2 KB answer with ten sources (what an LLM call's result might weigh). Its body
costs next to nothing, so the numbers are the cache's machinery: a *hit* runs the same input
again (the node is not called), a *miss* runs a new input every time (a ``get`` that finds
nothing, the node, and the ``set`` LangGraph waits for at the end of the run); ``bare`` is the
graph without a cache. Caches:

- ``InMemoryCache``: LangGraph's in-process cache, the reference of every ratio;
- ``TieredCache`` in-process only, and over Redis (warm: the hit is served by L1);
- ``TieredCache, Redis only``: ``max_bytes=0``, so every hit is a Redis round trip (what a
  replica that has not seen the entry yet pays);
- LangGraph's ``RedisCache`` (redis-py, no in-process level) and ``SqliteCache`` (a file).

Every round runs every cache (in a rotated order, so a slow moment of the machine hits them
alike); the report gives the median over rounds of microseconds per invocation, sync
(``invoke``) and async (``ainvoke``), and the ratio to ``InMemoryCache``. The target: a warm
in-process hit of ``TieredCache`` at most 2x ``InMemoryCache``'s.

:func:`run_section` is what the checkpoint benchmark calls to add this as a section of its
report (:func:`render_markdown` formats it); this module's ``__main__`` runs it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypedDict

import redis
from langgraph.cache.base import BaseCache
from langgraph.cache.memory import InMemoryCache
from langgraph.cache.redis import RedisCache
from langgraph.cache.sqlite import SqliteCache
from langgraph.graph import START, StateGraph
from langgraph.types import CachePolicy

from langgraph_resilient import TieredCache

DEFAULT_REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
REFERENCE = "InMemoryCache"
TARGET_RATIO = 2.0
"""A warm in-process hit of TieredCache costs at most this times InMemoryCache's."""
TARGETED = ("TieredCache, in-process", "TieredCache + Redis (warm)")


class State(TypedDict, total=False):
    question: str
    answer: str
    sources: list[dict[str, Any]]


def answer(state: State) -> State:
    """The "expensive" node: its result is what gets cached (a 2 KB answer, ten sources)."""
    q = state["question"]
    sources = [{"url": f"https://example.com/{q}/{i}", "score": i / 10} for i in range(10)]
    return {"answer": (q + " ") * (2000 // (len(q) + 1)), "sources": sources}


def build(cache: BaseCache[Any] | None) -> Any:
    builder: StateGraph[Any, Any, Any, Any] = StateGraph(State)
    builder.add_node("answer", answer, cache_policy=CachePolicy(ttl=3600))
    builder.add_edge(START, "answer")
    return builder.compile(cache=cache)


@dataclass
class Caches:
    """Every cache of the run, open; ``close()`` deletes what they wrote."""

    caches: dict[str, BaseCache[Any] | None]
    cleanup: list[Callable[[], None]]

    def close(self) -> None:
        for step in reversed(self.cleanup):
            with contextlib.suppress(Exception):
                step()


def open_caches(redis_url: str | None, tmp: str) -> Caches:
    """``bare`` (no cache) and every cache that can run here (the Redis ones need a Redis)."""
    run = secrets.token_hex(4)
    caches: dict[str, BaseCache[Any] | None] = {
        "bare (no cache)": None,
        REFERENCE: InMemoryCache(),
        "TieredCache, in-process": TieredCache(),
    }
    cleanup: list[Callable[[], None]] = []
    if redis_url is not None:
        prefix = f"bench_nc_{run}_"
        for name, max_bytes in (
            ("TieredCache + Redis (warm)", 64 * 1024 * 1024),
            ("TieredCache, Redis only", 0),
        ):
            cache = TieredCache.from_url(redis_url, prefix=prefix, max_bytes=max_bytes)
            cache.__enter__()
            cleanup.append(lambda c=cache: c.__exit__(None, None, None))
            caches[name] = cache
        client = redis.Redis.from_url(redis_url)
        caches["LangGraph RedisCache"] = RedisCache(client, prefix=f"{prefix}lg:")
        cleanup.append(lambda: _delete_prefix(client, prefix))
    caches["LangGraph SqliteCache"] = SqliteCache(path=os.path.join(tmp, f"cache-{run}.db"))
    return Caches(caches, cleanup)


def _delete_prefix(client: Any, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def _rotations(names: list[str], rounds: int) -> Iterator[list[str]]:
    for i in range(rounds):
        k = i % len(names)
        yield names[k:] + names[:k]


def measure_graphs(caches: dict[str, Any], rounds: int, invocations: int) -> dict[str, Any]:
    """Median µs per invocation, per cache: hit and miss, sync and async."""
    graphs = {name: build(cache) for name, cache in caches.items()}
    counter = iter(range(10**9))
    samples: dict[tuple[str, str, str], list[float]] = {}

    def hit_sync(graph: Any) -> None:
        for _ in range(invocations):
            graph.invoke({"question": "hit"})

    def miss_sync(graph: Any) -> None:
        for _ in range(invocations):
            graph.invoke({"question": f"miss{next(counter)}"})

    async def hit_async(graph: Any) -> None:
        for _ in range(invocations):
            await graph.ainvoke({"question": "hit"})

    async def miss_async(graph: Any) -> None:
        for _ in range(invocations):
            await graph.ainvoke({"question": f"miss{next(counter)}"})

    def timed(key: tuple[str, str, str], run: Callable[[], Any]) -> None:
        started = time.perf_counter()
        run()
        samples.setdefault(key, []).append((time.perf_counter() - started) / invocations * 1e6)

    for graph in graphs.values():  # warm up, and put the "hit" entry in every cache
        hit_sync(graph)
        asyncio.run(hit_async(graph))
    for order in _rotations(list(graphs), rounds):
        for name in order:
            graph = graphs[name]
            timed((name, "sync", "hit"), lambda g=graph: hit_sync(g))
            timed((name, "sync", "miss"), lambda g=graph: miss_sync(g))
            timed((name, "async", "hit"), lambda g=graph: asyncio.run(hit_async(g)))
            timed((name, "async", "miss"), lambda g=graph: asyncio.run(miss_async(g)))
    return {f"{n}|{m}|{k}": statistics.median(v) for (n, m, k), v in samples.items()}


def measure_gets(caches: dict[str, Any], rounds: int, calls: int) -> dict[str, float]:
    """Median µs of one ``cache.get`` that hits (the graph's own call, without the graph)."""
    key = (("__pregel_ns_writes", "bench", "answer"), "k")
    value = [["answer", answer({"question": "hit"})["answer"]], ["sources", []]]
    present = {n: c for n, c in caches.items() if c is not None}
    for cache in present.values():
        cache.set({key: (value, 3600)})
        cache.get([key])
    samples: dict[str, list[float]] = {}
    for order in _rotations(list(present), rounds):
        for name in order:
            get = present[name].get
            started = time.perf_counter()
            for _ in range(calls):
                get([key])
            samples.setdefault(name, []).append((time.perf_counter() - started) / calls * 1e6)
    return {name: statistics.median(v) for name, v in samples.items()}


def run_section(redis_url: str | None, *, quick: bool = False, rounds: int | None = None,
                invocations: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Measure every cache; the result is what :func:`render_markdown` formats. Blocking, and
    it runs event loops of its own: from async code, ``await asyncio.to_thread(run_section,
    ...)``."""
    rounds = rounds or (3 if quick else 15)
    invocations = invocations or (30 if quick else 200)
    with tempfile.TemporaryDirectory(prefix="bench-node-cache-") as tmp:
        opened = open_caches(redis_url, tmp)
        try:
            graphs = measure_graphs(opened.caches, rounds, invocations)
            gets = measure_gets(opened.caches, rounds, invocations * 10)
        finally:
            opened.close()
    return {
        "meta": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load": os.getloadavg()[0],
            "rounds": rounds,
            "invocations": invocations,
            "redis": redis_url is not None,
        },
        "caches": list(opened.caches),
        "graphs": graphs,
        "gets": gets,
    }


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}x" if value is not None and base else "-"


def render_markdown(result: dict[str, Any]) -> str:
    """The section: per-invocation table, ``cache.get`` table, and the target's verdict."""
    meta, graphs, gets = result["meta"], result["graphs"], result["gets"]
    lines = [
        "## Node cache",
        "",
        f"One cached node, µs per invocation, median of {meta['rounds']} rounds of "
        f"{meta['invocations']} (Python {meta['python']}, {meta['cpus']} CPUs, load "
        f"{meta['load']:.2f}); ratio to `{REFERENCE}`. Reproduce: "
        "`.venv/bin/python -m benchmarks.bench_node_cache`.",
        "",
        "| cache | sync hit | sync miss | async hit | async miss | `get` hit |",
        "|---|---|---|---|---|---|",
    ]
    for name in result["caches"]:
        cells = []
        for mode in ("sync", "async"):
            for kind in ("hit", "miss"):
                value = graphs.get(f"{name}|{mode}|{kind}")
                base = graphs.get(f"{REFERENCE}|{mode}|{kind}")
                cells.append(f"{value:.0f} ({_ratio(value, base)})" if value else "-")
        get = gets.get(name)
        cells.append(f"{get:.2f} ({_ratio(get, gets.get(REFERENCE))})" if get else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Target: a warm in-process hit at most {TARGET_RATIO:g}x `{REFERENCE}`'s."]
    for name in TARGETED:
        for label, value, base in (
            ("sync hit", graphs.get(f"{name}|sync|hit"), graphs.get(f"{REFERENCE}|sync|hit")),
            ("async hit", graphs.get(f"{name}|async|hit"), graphs.get(f"{REFERENCE}|async|hit")),
            ("get hit", gets.get(name), gets.get(REFERENCE)),
        ):
            if value is not None and base:
                verdict = "pass" if value / base <= TARGET_RATIO else "FAIL"
                lines.append(f"- {name}, {label}: {value / base:.2f}x: {verdict}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="'' to leave Redis out")
    parser.add_argument("--quick", action="store_true", help="a smoke run (a few seconds)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--invocations", type=int, default=None)
    args = parser.parse_args()
    result = run_section(
        args.redis_url or None,
        quick=args.quick,
        rounds=args.rounds,
        invocations=args.invocations,
    )
    print(render_markdown(result))


if __name__ == "__main__":
    main()
