"""Graphs the server tests serve next to the example project's."""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict


class Slow(TypedDict, total=False):
    delay: float
    log: Annotated[list[str], operator.add]


def _sleeper(name: str) -> Any:
    async def node(state: Slow) -> dict[str, Any]:
        if "boom" in state.get("log", []):
            raise ValueError(f"{name}: boom")
        await asyncio.sleep(float(state.get("delay", 0.0)))
        return {"log": [name]}

    return node


# Built here rather than with tests/graphs.py: the servers load this file by its path, where
# the tests package is not importable.
builder = StateGraph(Slow)
previous = START
for step in ("first", "second", "third"):
    builder.add_node(step, _sleeper(step))
    builder.add_edge(previous, step)
    previous = step
builder.add_edge(previous, END)
slow = builder.compile()
"""Three steps that each sleep ``delay`` seconds and append their name to ``log`` (and
raise ``ValueError`` when ``log`` holds ``"boom"``)."""
