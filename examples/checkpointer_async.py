"""ResilientSaver in an async program: a chat-like graph that keeps its history per thread.

Runs on Postgres when LANGGRAPH_RESILIENT_POSTGRES_URL is set, else on the embedded SQLite
file ./langgraph_state.db. Run it twice: the second run continues the same thread.
"""

from __future__ import annotations

import asyncio
import operator
import os
from typing import Annotated, TypedDict

from langgraph.graph import END, START, StateGraph

from langgraph_resilient import ResilientSaver


class Chat(TypedDict):
    messages: Annotated[list[str], operator.add]


def respond(state: Chat) -> dict[str, list[str]]:
    return {"messages": [f"echo #{len(state['messages'])}: {state['messages'][-1]}"]}


async def main() -> None:
    builder = StateGraph(Chat)
    builder.add_node("respond", respond)
    builder.add_edge(START, "respond")
    builder.add_edge("respond", END)

    saver = ResilientSaver.from_urls(
        postgres_url=os.environ.get("LANGGRAPH_RESILIENT_POSTGRES_URL"),
        prefix=os.environ.get("LANGGRAPH_RESILIENT_PREFIX", "lgr_"),
    )
    async with saver:
        graph = builder.compile(checkpointer=saver)
        config = {"configurable": {"thread_id": "example-chat"}}
        result = await graph.ainvoke({"messages": ["hello"]}, config)
        print(result["messages"][-1])
        history = [s async for s in graph.aget_state_history(config)]
        print(f"{len(result['messages'])} messages, {len(history)} checkpoints on this thread")


if __name__ == "__main__":
    asyncio.run(main())
