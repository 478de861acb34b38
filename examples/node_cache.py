"""TieredCache: a node's result cached by LangGraph's cache_policy, in-process and in Redis.

The second run with the same input is served by the cache (the node does not run), as it
would be on any other replica sharing the Redis. In-process only unless
LANGGRAPH_RESILIENT_REDIS_URL is set (then entries are shared through Redis, under
LANGGRAPH_RESILIENT_PREFIX).
"""

from __future__ import annotations

import os
import time
from typing import TypedDict

from langgraph.graph import START, StateGraph
from langgraph.types import CachePolicy

from langgraph_resilient import TieredCache


class Question(TypedDict, total=False):
    text: str
    answer: str


def expensive_answer(state: Question) -> Question:
    time.sleep(0.2)  # an LLM call, say
    return {"answer": f"the answer to {state['text']!r}"}


def main() -> None:
    builder = StateGraph(Question)
    builder.add_node("answer", expensive_answer, cache_policy=CachePolicy(ttl=600))
    builder.add_edge(START, "answer")

    with TieredCache.from_url(
        os.environ.get("LANGGRAPH_RESILIENT_REDIS_URL"),
        prefix=os.environ.get("LANGGRAPH_RESILIENT_PREFIX", "lgr_"),
        max_bytes=16 * 1024 * 1024,
    ) as cache:
        graph = builder.compile(cache=cache)
        for attempt in ("first", "second"):
            started = time.perf_counter()
            result = graph.invoke({"text": "life"})
            took_ms = (time.perf_counter() - started) * 1000
            print(f"{attempt} run: {result['answer']} ({took_ms:.0f} ms)")
        graph.clear_cache()  # the next run computes it again, on every replica


if __name__ == "__main__":
    main()
