"""ResilientSaver in a sync program (graph.invoke / graph.stream) with an interrupt.

The same saver object works as a plain `with` context manager: its connections then run on
a private background event loop. Embedded SQLite unless LANGGRAPH_RESILIENT_POSTGRES_URL is set.
"""

from __future__ import annotations

import os
from typing import TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from langgraph_resilient import ResilientSaver


class Order(TypedDict, total=False):
    item: str
    approved: bool


def ask(state: Order) -> Order:
    return {"approved": interrupt(f"approve an order of {state['item']}?") == "yes"}


def main() -> None:
    builder = StateGraph(Order)
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", END)

    with ResilientSaver.from_urls(
        postgres_url=os.environ.get("LANGGRAPH_RESILIENT_POSTGRES_URL"),
        prefix=os.environ.get("LANGGRAPH_RESILIENT_PREFIX", "lgr_"),
    ) as saver:
        graph = builder.compile(checkpointer=saver)
        config = {"configurable": {"thread_id": f"order-{os.getpid()}"}}
        for event in graph.stream({"item": "coffee"}, config, stream_mode="updates"):
            print("update:", event)
        print("waiting at:", graph.get_state(config).next)
        final = graph.invoke(Command(resume="yes"), config)
        print("final:", final)
        saver.delete_thread(config["configurable"]["thread_id"])


if __name__ == "__main__":
    main()
