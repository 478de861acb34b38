"""The graphs the tests run, built by one helper: a chain of nodes from START to END."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph


class Log(TypedDict, total=False):
    """The state most tests use: every node appends to ``log``."""

    log: Annotated[list[str], operator.add]


def appends(entry: str | Callable[[Any], str]) -> Callable[[Any], dict[str, list[str]]]:
    """A node that appends ``entry`` (or ``entry(state)``) to ``log``."""
    if isinstance(entry, str):
        return lambda state: {"log": [entry]}
    return lambda state: {"log": [entry(state)]}


def chain(*nodes: str | tuple[str, Any], state: type[Any] = Log) -> StateGraph[Any]:
    """``START -> node -> ... -> END``. A node given by name alone appends its name to
    ``log``; ``(name, runnable)`` adds that runnable."""
    builder: StateGraph[Any] = StateGraph(state)
    previous = START
    for node in nodes:
        name, runnable = (node, appends(node)) if isinstance(node, str) else node
        builder.add_node(name, runnable)
        builder.add_edge(previous, name)
        previous = name
    builder.add_edge(previous, END)
    return builder


def turn_graph() -> StateGraph[Any]:
    """One node that answers each turn with the number of entries it found."""
    return chain(("step", appends(lambda s: f"reply {len(s['log'])}")))


async def run_turns(graph: Any, threads: int, turns: range) -> None:
    """Run ``turns`` on threads ``t0``... ``t<threads-1>``, one after another."""
    for turn in turns:
        for t in range(threads):
            config = {"configurable": {"thread_id": f"t{t}"}}
            await graph.ainvoke({"log": [f"user {turn}"]}, config)


async def final_states(graph: Any, threads: int) -> list[list[str]]:
    """The ``log`` of each thread :func:`run_turns` ran."""
    return [
        (await graph.aget_state({"configurable": {"thread_id": f"t{t}"}})).values["log"]
        for t in range(threads)
    ]
