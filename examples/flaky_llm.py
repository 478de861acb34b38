"""A graph whose LLM node is flaky and slow, with every resilience policy at work.

The "LLM" is a fake with a switchable failure mode, so the program needs no API key and runs
in about a second. Each scene prints what the policies did:

1. retry        - two transient errors, then an answer (backoff with jitter)
2. timeout      - one attempt hangs; the per-attempt Timeout cancels it and Retry tries again
3. breaker      - the LLM is down; the breaker opens and later calls fail fast to the fallback
4. recovery     - after open_for_s a half-open probe succeeds and the breaker closes
5. bulkhead     - more concurrent runs than slots: the extra ones get the fallback at once
6. degradation  - a health check fails, the level drops to DEGRADED, the optional
                  "analysis" node is skipped (its fallback answers), then everything recovers
7. guard        - the same policies on a plain function (a tool call inside a node)

Run:  .venv/bin/python examples/flaky_llm.py
"""

from __future__ import annotations

import asyncio
import collections
import operator
from typing import Annotated, Any, TypedDict

from langgraph.graph import START, StateGraph

from langgraph_resilient import (
    Bulkhead,
    CircuitBreaker,
    CircuitState,
    DegradationManager,
    EventBus,
    Fallback,
    HealthChecker,
    ResilienceEvent,
    ResiliencePolicy,
    Retry,
    ServiceLevel,
    Timeout,
    with_resilience,
)


class State(TypedDict, total=False):
    question: str
    answer: str
    analysis: str
    notes: Annotated[list[str], operator.add]


class FakeLLM:
    """Answers after ``latency_s``; ``mode`` makes it fail: "ok", "flaky" (fails
    ``flaky_failures`` times), "hang" (first attempt never returns), or "down"."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.flaky_failures = 0
        self.latency_s = 0.001
        self.calls = 0

    async def complete(self, prompt: str) -> str:
        self.calls += 1
        if self.mode == "down":
            raise ConnectionError("LLM endpoint unreachable")
        if self.mode == "flaky" and self.flaky_failures > 0:
            self.flaky_failures -= 1
            raise TimeoutError("upstream timed out (HTTP 504)")
        if self.mode == "hang":
            self.mode = "ok"
            await asyncio.sleep(3600)  # cancelled by the Timeout
        await asyncio.sleep(self.latency_s)
        return f"answer to {prompt!r}"


llm = FakeLLM()


async def call_llm(state: State) -> dict[str, Any]:
    return {"answer": await llm.complete(state["question"])}


async def analysis(state: State) -> dict[str, Any]:
    return {"analysis": f"deep analysis of {state['answer']!r}"}


weather_calls = collections.Counter[str]()


def lookup_weather(city: str) -> str:
    """A 'tool' guarded on its own (see scene 7)."""
    weather_calls[city] += 1
    if weather_calls[city] < 2:
        raise ConnectionError("weather API reset the connection")
    return f"sunny in {city}"


def build(bus: EventBus, manager: DegradationManager, bulkhead: Bulkhead) -> Any:
    breaker = CircuitBreaker(
        "llm",
        failure_rate_threshold=0.75,
        minimum_calls=5,
        window_size=10,
        open_for_s=0.3,
        events=bus,
    )
    llm_policy = ResiliencePolicy(
        retry=Retry(max_attempts=3, initial_delay_s=0.01, max_delay_s=0.05, name="llm"),
        breaker=breaker,
        timeout=Timeout(0.2),
        bulkhead=bulkhead,
        fallback=Fallback(
            lambda state, error: {"answer": f"(fallback after {type(error).__name__})"}
        ),
        events=bus,
    )
    analysis_policy = ResiliencePolicy(
        feature="analysis",
        fallback=lambda state, error: {"analysis": "(skipped: service degraded)"},
        events=bus,
    )
    builder: StateGraph[Any, Any, Any, Any] = StateGraph(State)
    builder.add_node("llm", call_llm)
    builder.add_node("analysis", analysis)
    builder.add_edge(START, "llm")
    builder.add_edge("llm", "analysis")
    graph = with_resilience(
        builder, llm_policy, nodes={"analysis": analysis_policy}, degradation=manager
    ).compile()
    return graph, breaker


async def main() -> None:
    bus = EventBus()
    counts: collections.Counter[str] = collections.Counter()

    def count(event: ResilienceEvent) -> None:
        counts[event.kind.value] += 1
        if event.kind.value == "breaker_state":
            print(
                f"    [event] breaker {event.source}: {event.detail['old']} -> "
                f"{event.detail['new']} ({event.detail['reason']})"
            )
        if event.kind.value == "degradation_level":
            print(
                f"    [event] service level {event.detail['old'].name} -> "
                f"{event.detail['new'].name} ({event.detail['reason']})"
            )

    bus.subscribe(count)
    manager = DegradationManager({"analysis": ServiceLevel.FULL}, events=bus)
    bulkhead = Bulkhead(max_concurrent=2, max_queued=0)
    graph, breaker = build(bus, manager, bulkhead)

    print("1. retry: two transient errors, then an answer")
    llm.mode, llm.flaky_failures, llm.calls = "flaky", 2, 0
    result = await graph.ainvoke({"question": "hello"})
    print(f"    answer={result['answer']!r} after {llm.calls} LLM calls")
    assert result["answer"] == "answer to 'hello'" and llm.calls == 3

    print("2. timeout: the first attempt hangs and is cancelled")
    llm.mode, llm.calls = "hang", 0
    result = await graph.ainvoke({"question": "are you there?"})
    print(f"    answer={result['answer']!r} after {llm.calls} LLM calls")
    assert result["answer"].startswith("answer to") and llm.calls == 2

    print("3. breaker: the LLM is down")
    llm.mode, llm.calls = "down", 0
    for i in range(3):
        result = await graph.ainvoke({"question": f"q{i}"})
        print(f"    run {i}: answer={result['answer']!r}, breaker={breaker.state.value}")
    assert breaker.state is CircuitState.OPEN
    calls_while_open = llm.calls
    await graph.ainvoke({"question": "one more"})
    print(f"    while open the LLM was not called: {llm.calls == calls_while_open}")
    assert llm.calls == calls_while_open

    print("4. recovery: the LLM is back; after open_for_s a probe closes the breaker")
    llm.mode = "ok"
    await asyncio.sleep(0.35)
    result = await graph.ainvoke({"question": "better now?"})
    print(f"    answer={result['answer']!r}, breaker={breaker.state.value}")
    assert breaker.state.value == CircuitState.CLOSED.value

    print("5. bulkhead: 5 concurrent runs, 2 slots, no queue")
    llm.latency_s = 0.05
    results = await asyncio.gather(*(graph.ainvoke({"question": f"c{i}"}) for i in range(5)))
    answers = [r["answer"] for r in results]
    rejected = sum("BulkheadFullError" in a for a in answers)
    print(f"    {len(answers) - rejected} answered, {rejected} got the fallback at once")
    assert rejected == 3
    llm.latency_s = 0.001

    print("6. degradation: a failing health check lowers the level")
    healthy = {"vector_db": True}
    checker = HealthChecker(manager, failures_to_degrade=2, successes_to_recover=2)
    checker.add_check("vector_db", lambda: healthy["vector_db"], degrades_to=ServiceLevel.DEGRADED)
    healthy["vector_db"] = False
    for _ in range(2):
        await checker.check_once()
    result = await graph.ainvoke({"question": "analyse this"})
    print(f"    level={manager.level.name}: analysis={result['analysis']!r}")
    assert result["analysis"] == "(skipped: service degraded)"
    healthy["vector_db"] = True
    for _ in range(2):
        await checker.check_once()
    result = await graph.ainvoke({"question": "analyse this"})
    print(f"    level={manager.level.name}: analysis={result['analysis']!r}")
    assert result["analysis"].startswith("deep analysis")

    print("7. guard: the same policies on a plain function")
    tool = ResiliencePolicy(retry=Retry(3, initial_delay_s=0.01, name="tools")).guard(
        lookup_weather
    )
    print(f"    {tool('Lisbon')!r} after {weather_calls['Lisbon']} calls")

    print("\nevents seen:", dict(sorted(counts.items())))


if __name__ == "__main__":
    asyncio.run(main())
