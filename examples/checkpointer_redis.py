"""Two replicas share one thread through Redis: the cache tier and the single-writer lease.

Each "replica" is a ResilientSaver of its own (as two processes behind a load balancer would
have), with the Redis tier in front of the durable tier: Postgres when
LANGGRAPH_RESILIENT_POSTGRES_URL is set, else the embedded SQLite file ./langgraph_state.db.
Redis is LANGGRAPH_RESILIENT_REDIS_URL (default redis://127.0.0.1:6379/0).

- replica A takes the thread's lease and runs a turn; replica B, asking for the lease
  meanwhile, is told the thread is busy (LockTimeoutError);
- once A has released it, B continues the thread from A's checkpoint, and A reads B's newer
  head at once: a replica never serves a stale head from its cache.
"""

from __future__ import annotations

import asyncio
import operator
import os
from typing import Annotated, TypedDict

from langgraph.graph import END, START, StateGraph

from langgraph_resilient import LockTimeoutError, ResilientSaver


class Chat(TypedDict):
    messages: Annotated[list[str], operator.add]


def respond(state: Chat) -> dict[str, list[str]]:
    return {"messages": [f"echo #{len(state['messages'])}: {state['messages'][-1]}"]}


def replica() -> ResilientSaver:
    """A saver as each replica builds it: the same URLs, its own connections and cache."""
    return ResilientSaver.from_urls(
        postgres_url=os.environ.get("LANGGRAPH_RESILIENT_POSTGRES_URL"),
        redis_url=os.environ.get("LANGGRAPH_RESILIENT_REDIS_URL", "redis://127.0.0.1:6379/0"),
        prefix=os.environ.get("LANGGRAPH_RESILIENT_PREFIX", "lgr_"),
        redis_required=True,  # this example is about Redis: fail if it cannot be reached
    )


async def main() -> None:
    builder = StateGraph(Chat)
    builder.add_node("respond", respond)
    builder.add_edge(START, "respond")
    builder.add_edge("respond", END)
    config = {"configurable": {"thread_id": "example-shared"}}

    async with replica() as saver_a, replica() as saver_b:
        graph_a = builder.compile(checkpointer=saver_a)
        graph_b = builder.compile(checkpointer=saver_b)

        async with saver_a.lock_thread("example-shared", ttl_s=10.0, wait_s=5.0) as lease:
            try:
                async with saver_b.lock_thread("example-shared", wait_s=0.2):
                    raise AssertionError("two writers held one thread")
            except LockTimeoutError:
                print(f"replica B: the thread is busy (replica A holds epoch {lease.epoch})")
            result = await graph_a.ainvoke({"messages": ["hello from A"]}, config)
            print(f"replica A: {result['messages'][-1]}")

        result = await graph_b.ainvoke({"messages": ["hello from B"]}, config)
        print(f"replica B: {result['messages'][-1]} ({len(result['messages'])} messages)")

        state = await graph_a.aget_state(config)
        assert state.values["messages"] == result["messages"], "replica A read a stale head"
        print(f"replica A reads B's turn at once: {state.values['messages'][-1]!r}")


if __name__ == "__main__":
    asyncio.run(main())
