"""Graphs the server tests serve next to the example project's."""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any

from typing_extensions import TypedDict

from tests.graphs import chain


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


slow = chain(
    *((step, _sleeper(step)) for step in ("first", "second", "third")), state=Slow
).compile()
"""Three steps that each sleep ``delay`` seconds and append their name to ``log`` (and
raise ``ValueError`` when ``log`` holds ``"boom"``)."""
