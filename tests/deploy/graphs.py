"""Graphs the live deploy tests serve (``serve --graph NAME=tests/deploy/graphs.py:NAME``).

``tally``: three steps that each sleep ``delay`` seconds and append ``"<run>:<step>"`` to
``log``. ``run`` is a marker the client picks per request, so the thread's state says which
runs completed (all three steps), which stopped half-way, and that no run executed twice.

``guarded``: the node middleware at work, so that every metric the dashboard and the alerts
read gets a sample: a node that fails its first attempt of each run and is retried, a node
whose breaker opens (its calls fail, a fallback answers) and a node that times out (its
fallback answers too).
"""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from langgraph_resilient import CircuitBreaker, Fallback, ResiliencePolicy, Retry, with_resilience

STEPS = ("first", "second", "third")


class Tally(TypedDict, total=False):
    run: str
    delay: float
    log: Annotated[list[str], operator.add]


def _step(name: str) -> Any:
    async def step(state: Tally) -> dict[str, Any]:
        await asyncio.sleep(float(state.get("delay", 0.0)))
        return {"log": [f"{state.get('run', '')}:{name}"]}

    return step


_tally = StateGraph(Tally)
for _name in STEPS:
    _tally.add_node(_name, _step(_name))
_tally.add_edge(START, STEPS[0])
_tally.add_edge(STEPS[0], STEPS[1])
_tally.add_edge(STEPS[1], STEPS[2])
_tally.add_edge(STEPS[2], END)
tally = _tally.compile()


class Guarded(TypedDict, total=False):
    run: str
    log: Annotated[list[str], operator.add]


_attempts: dict[str, int] = {}
"""Attempts of ``flaky`` per run, in this worker process."""


def flaky(state: Guarded) -> dict[str, Any]:
    run = state.get("run", "")
    _attempts[run] = _attempts.get(run, 0) + 1
    if _attempts[run] == 1:
        raise ConnectionError("first attempt fails")
    return {"log": ["flaky"]}


def broken(state: Guarded) -> dict[str, Any]:
    raise ConnectionError("always fails")


async def sluggish(state: Guarded) -> dict[str, Any]:
    await asyncio.sleep(1.0)
    return {"log": ["sluggish"]}


def _answer(text: str) -> Fallback:
    return Fallback(lambda state, error: {"log": [text]})


_guarded = StateGraph(Guarded)
_guarded.add_node("flaky", flaky)
_guarded.add_node("broken", broken)
_guarded.add_node("sluggish", sluggish)
_guarded.add_edge(START, "flaky")
_guarded.add_edge("flaky", "broken")
_guarded.add_edge("broken", "sluggish")
_guarded.add_edge("sluggish", END)
guarded = with_resilience(
    _guarded,
    nodes={
        "flaky": ResiliencePolicy(retry=Retry(max_attempts=2, initial_delay_s=0.01)),
        "broken": ResiliencePolicy(
            breaker=CircuitBreaker(
                "deploy-test-broken", failure_rate_threshold=0.5, minimum_calls=2, open_for_s=60
            ),
            fallback=_answer("broken: fallback"),
        ),
        "sluggish": ResiliencePolicy(timeout=0.05, fallback=_answer("sluggish: fallback")),
    },
).compile()
