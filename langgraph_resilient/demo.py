"""The demo behind ``langgraph-resilient demo``: a ticket graph that pauses for approval.

intake -> research -> draft -> review (interrupt: waits for a human) -> publish

One run of the demo takes a new ticket up to the review, closes the saver (as a process that
stops would), reopens it (as another replica would), resumes the ticket with an approval and
prints what was persisted. Running the demo again continues the same thread: the stored state
carries every earlier ticket.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Annotated, Any, TypedDict, cast

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from langgraph_resilient.checkpoint import ResilientSaver


class TicketState(TypedDict, total=False):
    """State of the demo thread; ``log`` and ``published`` accumulate across tickets."""

    ticket: str
    notes: str
    draft: str
    approved: bool
    log: Annotated[list[str], operator.add]
    published: Annotated[list[str], operator.add]


def intake(state: TicketState) -> dict[str, Any]:
    return {"log": [f"intake: {state['ticket']}"]}


def research(state: TicketState) -> dict[str, Any]:
    notes = f"{len(state.get('published', []))} earlier ticket(s) on this thread"
    return {"notes": notes, "log": ["research: " + notes]}


def draft(state: TicketState) -> dict[str, Any]:
    text = f"Answer to {state['ticket']!r} ({state['notes']})"
    return {"draft": text, "log": ["draft written"]}


def review(state: TicketState) -> dict[str, Any]:
    decision = interrupt({"question": "approve this draft?", "draft": state["draft"]})
    return {"approved": decision == "approve", "log": [f"review: {decision}"]}


def publish(state: TicketState) -> dict[str, Any]:
    if not state.get("approved"):
        return {"log": ["publish: skipped (not approved)"]}
    return {"published": [state["ticket"]], "log": ["published"]}


def build_graph() -> StateGraph[TicketState]:
    """The demo's uncompiled graph."""
    builder = StateGraph(TicketState)
    builder.add_node("intake", intake)
    builder.add_node("research", research)
    builder.add_node("draft", draft)
    builder.add_node("review", review)
    builder.add_node("publish", publish)
    builder.add_edge(START, "intake")
    builder.add_edge("intake", "research")
    builder.add_edge("research", "draft")
    builder.add_edge("draft", "review")
    builder.add_edge("review", "publish")
    builder.add_edge("publish", END)
    return builder


def run_demo(
    open_saver: Callable[[], ResilientSaver],
    *,
    thread_id: str = "demo",
    out: Callable[[str], None] = print,
) -> TicketState:
    """Run one ticket through the graph with a stop and a resume; returns the final state."""
    config: Any = {"configurable": {"thread_id": thread_id}}
    builder = build_graph()

    with open_saver() as saver:
        graph = builder.compile(checkpointer=saver)
        snapshot = graph.get_state(config)
        earlier = list(snapshot.values.get("published", []))
        if snapshot.interrupts:
            out(f"[1] thread {thread_id!r} was waiting for review since an earlier run")
        else:
            ticket = f"ticket-{len(earlier) + 1}"
            if earlier:
                out(f"[1] resuming stored thread {thread_id!r}: {len(earlier)} ticket(s) done")
            else:
                out(f"[1] new thread {thread_id!r}")
            graph.invoke({"ticket": ticket}, config)
            snapshot = graph.get_state(config)
        question = snapshot.interrupts[0].value if snapshot.interrupts else None
        out(f"    paused at {snapshot.next} asking: {question}")
        out(f"    checkpoints stored so far: {len(list(saver.list(config)))}")

    out("[2] saver closed; reopening it, as a restarted process or another replica would")
    with open_saver() as saver:
        graph = builder.compile(checkpointer=saver)
        final = cast(TicketState, graph.invoke(Command(resume="approve"), config))
        history = list(graph.get_state_history(config))
        out(f"    resumed and finished: published={final.get('published')}")
        out(f"    checkpoints in this thread's history: {len(history)}")
        out(f"    last log lines: {final.get('log', [])[-3:]}")
    out("[3] run the demo again: it continues this thread from the stored state")
    return final
