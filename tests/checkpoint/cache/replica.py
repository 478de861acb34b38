"""A replica in its own process, for the two-process coherence test.

Reads JSON commands on stdin, one per line, and answers each with one JSON line on stdout:
``{"op": "turn", "thread": t}`` runs one graph turn (an ``ainvoke``) and answers the thread's
message count; ``{"op": "state", "thread": t}`` answers it without running; ``{"op":
"delete", "thread": t}`` deletes the thread. The saver's caches stay warm across commands.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from langgraph.graph import StateGraph

from langgraph_resilient import ResilientSaver
from tests.graphs import Log, appends, chain


def graph_builder() -> StateGraph[Log]:
    return chain(("reply", appends(lambda s: f"reply to {len(s['log'])}")))


async def serve(postgres_url: str, redis_url: str, prefix: str) -> None:
    loop = asyncio.get_running_loop()
    async with ResilientSaver.from_urls(
        postgres_url=postgres_url, redis_url=redis_url, prefix=prefix
    ) as saver:
        graph = graph_builder().compile(checkpointer=saver)
        print(json.dumps({"ready": True}), flush=True)
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            command: dict[str, Any] = json.loads(line)
            config = {"configurable": {"thread_id": command["thread"]}}
            if command["op"] == "turn":
                await graph.ainvoke({"log": [f"user {command['n']}"]}, config)
            elif command["op"] == "delete":
                await saver.adelete_thread(command["thread"])
            state = await graph.aget_state(config)
            messages = state.values.get("log", [])
            print(json.dumps({"count": len(messages), "last": messages[-1:]}), flush=True)


if __name__ == "__main__":
    asyncio.run(serve(*sys.argv[1:4]))
