"""with_resilience on real LangGraph graphs: every LangGraph feature keeps working under the
middleware (interrupts, Command, Send, subgraphs, native retry/timeout/error_handler,
injection, streaming), in invoke, ainvoke, stream and astream."""

from __future__ import annotations

import asyncio
import contextvars
import operator
import uuid
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_config, get_stream_writer
from langgraph.errors import NodeTimeoutError as LangGraphNodeTimeoutError
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore
from langgraph.store.memory import InMemoryStore
from langgraph.types import Command, RetryPolicy, Send, StreamWriter, interrupt

from langgraph_resilient import (
    CircuitBreaker,
    CircuitState,
    ConfigurationError,
    DegradationManager,
    EventBus,
    EventKind,
    Fallback,
    ManualClock,
    NodeTimeoutError,
    ResiliencePolicy,
    Retry,
    ServiceLevel,
    Timeout,
    with_resilience,
)
from langgraph_resilient.runtime import ResilientNode
from tests import graphs
from tests.runtime.conftest import Recorder


class State(TypedDict, total=False):
    value: int
    log: Annotated[list[str], operator.add]
    answer: str


def thread() -> RunnableConfig:
    return {"configurable": {"thread_id": uuid.uuid4().hex}}


def full_policy(name: str, clock: ManualClock, bus: EventBus, **overrides: Any) -> ResiliencePolicy:
    policy = ResiliencePolicy(
        retry=Retry(3, initial_delay_s=0.1, jitter="none", clock=clock, name=name),
        breaker=CircuitBreaker(name, minimum_calls=5, window_size=10, clock=clock, events=bus),
        timeout=Timeout(5),
        fallback=Fallback(lambda state, error: {"answer": f"fallback: {type(error).__name__}"}),
        events=bus,
    )
    return policy.replace(**overrides) if overrides else policy


class Flaky:
    """A node failing ``failures`` times with ConnectionError, then adding 1."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self, state: State) -> dict[str, Any]:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"attempt {self.calls} failed")
        return {"value": state.get("value", 0) + 1, "log": [f"flaky@{self.calls}"]}


def chain(*nodes: tuple[str, Any]) -> StateGraph[Any, Any, Any, Any]:
    return graphs.chain(*nodes, state=State)


# ---------------------------------------------------------------------- basics


def test_state_graph_in_state_graph_out_and_original_untouched(
    clock: ManualClock, name: str, bus: EventBus
) -> None:
    flaky = Flaky(2)
    builder = chain(("flaky", flaky))
    wrapped = with_resilience(builder, full_policy(name, clock, bus))
    assert isinstance(wrapped, StateGraph) and wrapped is not builder
    assert isinstance(wrapped.nodes["flaky"].runnable, ResilientNode)
    assert not isinstance(builder.nodes["flaky"].runnable, ResilientNode)
    assert wrapped.compile().invoke({"value": 1}) == {"value": 2, "log": ["flaky@3"]}
    assert clock.sleeps == [0.1, 0.2]
    flaky.calls, flaky.failures = 0, 1
    with pytest.raises(ConnectionError):
        builder.compile().invoke({"value": 1})  # the original graph has no policies


def test_compiled_in_compiled_out(clock: ManualClock, name: str, bus: EventBus) -> None:
    saver, store = InMemorySaver(), InMemoryStore()
    compiled = chain(("flaky", Flaky(1))).compile(
        checkpointer=saver, store=store, interrupt_after=["flaky"], name="mine"
    )
    wrapped = with_resilience(compiled, full_policy(name, clock, bus))
    assert type(wrapped) is type(compiled)
    assert wrapped.checkpointer is saver and wrapped.store is store
    assert wrapped.interrupt_after_nodes == ["flaky"] and wrapped.name == "mine"
    assert not isinstance(compiled.nodes["flaky"].bound, ResilientNode)
    config = thread()
    assert wrapped.invoke({"value": 1}, config)["value"] == 2
    assert wrapped.get_state(config).next == ()


@pytest.mark.parametrize("api", ["invoke", "stream", "ainvoke", "astream"])
async def test_every_api_sync_and_async_nodes(
    api: str, clock: ManualClock, name: str, bus: EventBus
) -> None:
    sync_node = Flaky(1)
    async_calls = 0

    async def async_node(state: State) -> dict[str, Any]:
        nonlocal async_calls
        async_calls += 1
        if async_calls == 1:
            raise TimeoutError("slow upstream")
        return {"value": state["value"] * 10, "log": ["async"]}

    nodes: list[tuple[str, Any]] = [("sync_node", sync_node)]
    if api in ("ainvoke", "astream"):
        nodes.append(("async_node", async_node))
    graph = with_resilience(chain(*nodes), full_policy(name, clock, bus)).compile()
    if api == "invoke":
        result = graph.invoke({"value": 1})
    elif api == "stream":
        chunks = list(graph.stream({"value": 1}, stream_mode="values"))
        result = chunks[-1]
    elif api == "ainvoke":
        result = await graph.ainvoke({"value": 1})
    else:
        chunks = [c async for c in graph.astream({"value": 1}, stream_mode="values")]
        result = chunks[-1]
    expected = 2 if api in ("invoke", "stream") else 20
    assert result["value"] == expected
    assert sync_node.calls == 2


def test_call_events_report_outcome_and_attempts(
    clock: ManualClock, name: str, bus: EventBus, recorder: Recorder
) -> None:
    graph = with_resilience(
        chain(("flaky", Flaky(2)), ("broken", Flaky(99))),
        full_policy(name, clock, bus, breaker=None),
    ).compile()
    assert graph.invoke({"value": 1})["answer"] == "fallback: ConnectionError"
    calls = {e.source: e.detail for e in recorder.of(EventKind.CALL)}
    assert calls["flaky"]["outcome"] == "success" and calls["flaky"]["attempts"] == 3
    assert calls["broken"]["outcome"] == "fallback" and calls["broken"]["attempts"] == 3
    assert len(recorder.of(EventKind.RETRY)) == 4
    assert [e.detail["reason"] for e in recorder.of(EventKind.RETRY_GIVE_UP)] == ["max_attempts"]


# ---------------------------------------------------------------------- interrupts


@pytest.mark.parametrize("use_async", [False, True])
async def test_interrupt_and_resume(
    use_async: bool, clock: ManualClock, name: str, bus: EventBus
) -> None:
    def ask(state: State) -> dict[str, Any]:
        reply = interrupt("approve?")
        return {"answer": f"got {reply}"}

    policy = full_policy(name, clock, bus)
    graph = with_resilience(chain(("ask", ask)), policy).compile(checkpointer=InMemorySaver())
    config = thread()
    if use_async:
        first = await graph.ainvoke({"value": 1}, config)
        final = await graph.ainvoke(Command(resume="yes"), config)
    else:
        first = graph.invoke({"value": 1}, config)
        final = graph.invoke(Command(resume="yes"), config)
    assert first["__interrupt__"][0].value == "approve?"  # not swallowed by the fallback
    assert final["answer"] == "got yes"
    assert clock.sleeps == []  # an interrupt is never retried
    assert policy.breaker is not None and policy.breaker.snapshot()["calls"] == 1  # success only


def test_retry_after_resume_reuses_the_answer(clock: ManualClock, name: str, bus: EventBus) -> None:
    """A node that failed after interrupt() was answered is retried by our Retry; its
    interrupt() must return the same answer instead of asking again."""
    attempts = 0

    def ask_then_flake(state: State) -> dict[str, Any]:
        nonlocal attempts
        reply = interrupt("approve?")
        attempts += 1
        if attempts == 1:
            raise ConnectionError("lost the connection after the human answered")
        return {"answer": f"got {reply}"}

    graph = with_resilience(
        chain(("ask", ask_then_flake)), full_policy(name, clock, bus, fallback=None)
    ).compile(checkpointer=InMemorySaver())
    config = thread()
    graph.invoke({"value": 1}, config)
    final = graph.invoke(Command(resume="yes"), config)
    assert final["answer"] == "got yes"
    assert "__interrupt__" not in final
    assert attempts == 2


# ---------------------------------------------------------------------- Command and Send


async def test_command_goto_and_update(clock: ManualClock, name: str, bus: EventBus) -> None:
    def router(state: State) -> Command[Any]:
        return Command(goto="right", update={"log": ["router"]})

    builder: StateGraph[Any, Any, Any, Any] = StateGraph(State)
    builder.add_node("router", router, destinations=("left", "right"))
    builder.add_node("left", lambda s: {"log": ["left"]})
    builder.add_node("right", lambda s: {"log": ["right"]})
    builder.add_edge(START, "router")
    graph = with_resilience(builder, full_policy(name, clock, bus)).compile()
    assert graph.invoke({"value": 0})["log"] == ["router", "right"]
    assert (await graph.ainvoke({"value": 0}))["log"] == ["router", "right"]


def test_send_fan_out(clock: ManualClock, name: str, bus: EventBus) -> None:
    attempts: dict[int, int] = {}

    def worker(item: dict[str, int]) -> dict[str, Any]:
        n = item["n"]
        attempts[n] = attempts.get(n, 0) + 1
        if n == 2 and attempts[n] == 1:
            raise ConnectionError("flaky worker")
        return {"log": [f"w{n}"]}

    builder: StateGraph[Any, Any, Any, Any] = StateGraph(State)
    builder.add_node("start", lambda s: {"log": ["start"]})
    builder.add_node("worker", worker)
    builder.add_edge(START, "start")
    builder.add_conditional_edges("start", lambda s: [Send("worker", {"n": i}) for i in range(4)])
    graph = with_resilience(builder, full_policy(name, clock, bus)).compile()
    log = graph.invoke({"value": 0})["log"]
    assert log[0] == "start" and sorted(log[1:]) == ["w0", "w1", "w2", "w3"]
    assert attempts == {0: 1, 1: 1, 2: 2, 3: 1}


# ---------------------------------------------------------------------- subgraphs


def make_subgraph(inner: Any, checkpointer: Any = None) -> Any:
    sub: StateGraph[Any, Any, Any, Any] = StateGraph(State)
    sub.add_node("inner", inner)
    sub.add_edge(START, "inner")
    return sub.compile(checkpointer=checkpointer)


def test_subgraph_node_wrapped_as_a_whole(clock: ManualClock, name: str, bus: EventBus) -> None:
    inner = Flaky(1)
    builder = chain(("sub", make_subgraph(inner)))
    graph = with_resilience(builder, full_policy(name, clock, bus)).compile()
    assert graph.invoke({"value": 1})["value"] == 2
    assert inner.calls == 2  # the whole subgraph was retried
    assert graph.nodes["sub"].subgraphs  # LangGraph still sees the subgraph


def test_subgraph_inner_nodes_wrapped(clock: ManualClock, name: str, bus: EventBus) -> None:
    inner = Flaky(99)
    builder = chain(("sub", make_subgraph(inner)), ("after", lambda s: {"log": ["after"]}))
    graph = with_resilience(
        builder,
        full_policy(name, clock, bus),
        subgraphs=True,
        nodes={"sub/inner": full_policy(name, clock, bus).replace(retry=None)},
    ).compile()
    result = graph.invoke({"value": 1})
    assert result["answer"] == "fallback: ConnectionError"
    assert result["log"] == ["after"]
    assert inner.calls == 1  # the override has no Retry; the subgraph node itself has none
    sub_node = graph.nodes["sub"]
    assert not isinstance(sub_node.bound, ResilientNode)
    assert isinstance(sub_node.subgraphs[0].nodes["inner"].bound, ResilientNode)


def test_interrupt_inside_a_wrapped_subgraph(clock: ManualClock, name: str, bus: EventBus) -> None:
    def ask(state: State) -> dict[str, Any]:
        return {"answer": interrupt("inner question")}

    builder = chain(("sub", make_subgraph(ask)))
    graph = with_resilience(builder, full_policy(name, clock, bus), subgraphs=True).compile(
        checkpointer=InMemorySaver()
    )
    config = thread()
    first = graph.invoke({"value": 1}, config)
    assert first["__interrupt__"][0].value == "inner question"
    state = graph.get_state(config, subgraphs=True)
    assert state.tasks[0].state is not None  # the subgraph's own checkpoint is found
    assert graph.invoke(Command(resume="42"), config)["answer"] == "42"


def test_parent_command_passes_through(clock: ManualClock, name: str, bus: EventBus) -> None:
    def jump(state: State) -> Command[Any]:
        return Command(graph=Command.PARENT, goto="done", update={"log": ["jumped"]})

    builder: StateGraph[Any, Any, Any, Any] = StateGraph(State)
    builder.add_node("sub", make_subgraph(jump), destinations=("done",))
    builder.add_node("done", lambda s: {"log": ["done"]})
    builder.add_edge(START, "sub")
    graph = with_resilience(builder, full_policy(name, clock, bus), subgraphs=True).compile()
    assert graph.invoke({"value": 0})["log"] == ["jumped", "done"]


# ---------------------------------------------------------------------- native policies


def native_graph(flaky: Flaky) -> StateGraph[Any, Any, Any, Any]:
    builder: StateGraph[Any, Any, Any, Any] = StateGraph(State)
    builder.add_node(
        "flaky",
        flaky,
        retry_policy=RetryPolicy(
            max_attempts=2, initial_interval=0.001, jitter=False, retry_on=ConnectionError
        ),
    )
    builder.add_edge(START, "flaky")
    return builder


def test_native_retry_wins_by_default(clock: ManualClock, name: str, bus: EventBus) -> None:
    flaky = Flaky(99)
    graph = with_resilience(native_graph(flaky), full_policy(name, clock, bus)).compile()
    # LangGraph tries twice, our Retry stays out, and our Fallback waits for the last try.
    assert graph.invoke({"value": 1})["answer"] == "fallback: ConnectionError"
    assert flaky.calls == 2
    assert clock.sleeps == []


def test_native_retry_replace_and_both(clock: ManualClock, name: str, bus: EventBus) -> None:
    flaky = Flaky(99)
    graph = with_resilience(
        native_graph(flaky), full_policy(name, clock, bus), native_retry="replace"
    ).compile()
    graph.invoke({"value": 1})
    assert flaky.calls == 3  # ours only

    flaky = Flaky(99)
    graph = with_resilience(
        native_graph(flaky), full_policy(name + "b", clock, bus, breaker=None), native_retry="both"
    ).compile()
    graph.invoke({"value": 1})
    assert flaky.calls == 6  # 2 LangGraph attempts x 3 of ours


def test_graph_wide_native_default_counts(clock: ManualClock, name: str, bus: EventBus) -> None:
    flaky = Flaky(99)
    builder = chain(("flaky", flaky))
    builder.set_node_defaults(
        retry_policy=RetryPolicy(max_attempts=2, initial_interval=0.001, jitter=False)
    )
    graph = with_resilience(builder, full_policy(name, clock, bus)).compile()
    graph.invoke({"value": 1})
    assert flaky.calls == 2


async def test_native_timeout_still_applies(clock: ManualClock, name: str, bus: EventBus) -> None:
    async def slow(state: State) -> dict[str, Any]:
        await asyncio.sleep(5)
        return {}

    builder: StateGraph[Any, Any, Any, Any] = StateGraph(State)
    builder.add_node("slow", slow, timeout=0.05)
    builder.add_edge(START, "slow")
    # our per-attempt Timeout is longer; LangGraph's wall-clock timeout cancels the pipeline
    graph = with_resilience(builder, full_policy(name, clock, bus, fallback=None)).compile()
    with pytest.raises(LangGraphNodeTimeoutError):
        await graph.ainvoke({"value": 1})


def test_native_error_handler_still_applies(clock: ManualClock, name: str, bus: EventBus) -> None:
    def handler(state: State) -> dict[str, Any]:
        return {"answer": "handled by LangGraph"}

    builder: StateGraph[Any, Any, Any, Any] = StateGraph(State)
    builder.add_node("broken", Flaky(99), error_handler=handler)
    builder.add_edge(START, "broken")
    policy = full_policy(name, clock, bus, fallback=None, breaker=None)
    graph = with_resilience(builder, policy).compile()
    assert graph.invoke({"value": 1})["answer"] == "handled by LangGraph"
    assert not isinstance(graph.nodes["__error_handler__broken"].bound, ResilientNode)


# ---------------------------------------------------------------------- injection, streaming


VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


@pytest.mark.parametrize("use_async", [False, True])
async def test_injection_config_store_writer_runtime_contextvars(
    use_async: bool, clock: ManualClock, name: str, bus: EventBus
) -> None:
    seen: dict[str, Any] = {}

    def node(
        state: State,
        config: RunnableConfig,
        *,
        writer: StreamWriter,
        store: BaseStore,
        runtime: Runtime[Any],
    ) -> dict[str, Any]:
        seen["config_thread"] = config["configurable"]["thread_id"]
        seen["get_config_thread"] = get_config()["configurable"]["thread_id"]
        seen["var"] = VAR.get()
        seen["context"] = runtime.context
        store.put(("ns",), "k", {"v": 1})
        writer({"progress": "half"})
        get_stream_writer()({"progress": "done"})
        return {"value": 1}

    graph = with_resilience(chain(("node", node)), full_policy(name, clock, bus)).compile(
        checkpointer=InMemorySaver(), store=InMemoryStore()
    )
    VAR.set("caller value")
    config = thread()
    if use_async:
        chunks = [
            c
            async for c in graph.astream(
                {"value": 0}, config, stream_mode="custom", context={"user": "u1"}
            )
        ]
    else:
        chunks = list(
            graph.stream({"value": 0}, config, stream_mode="custom", context={"user": "u1"})
        )
    assert chunks == [{"progress": "half"}, {"progress": "done"}]
    assert seen == {
        "config_thread": config["configurable"]["thread_id"],
        "get_config_thread": config["configurable"]["thread_id"],
        "var": "caller value",
        "context": {"user": "u1"},
    }
    assert graph.store is not None and graph.store.get(("ns",), "k") is not None


def test_sync_timeout_in_a_graph_uses_the_fallback(
    clock: ManualClock, name: str, bus: EventBus
) -> None:
    import threading

    release = threading.Event()

    def stuck(state: State) -> dict[str, Any]:
        get_stream_writer()({"chunk": "before"})
        release.wait(5)
        get_stream_writer()({"chunk": "after the timeout"})  # dropped
        return {"value": 99}

    policy = full_policy(name, clock, bus, timeout=Timeout(0.05), retry=None)
    graph = with_resilience(chain(("stuck", stuck)), policy).compile()
    chunks = list(graph.stream({"value": 0}, stream_mode=["custom", "values"]))
    release.set()
    assert ("custom", {"chunk": "before"}) in chunks
    mode, values = chunks[-1]
    assert (mode, values["answer"]) == ("values", "fallback: NodeTimeoutError")
    assert values["value"] == 0  # the abandoned attempt's result never lands


async def test_cancelled_run_releases_slots(clock: ManualClock, name: str, bus: EventBus) -> None:
    from langgraph_resilient import Bulkhead

    started = asyncio.Event()

    async def hang(state: State) -> dict[str, Any]:
        started.set()
        await asyncio.sleep(30)
        return {}

    bulkhead = Bulkhead(1)
    graph = with_resilience(
        chain(("hang", hang)), full_policy(name, clock, bus, bulkhead=bulkhead)
    ).compile()
    task = asyncio.create_task(graph.ainvoke({"value": 0}))
    await started.wait()
    assert bulkhead.active == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert bulkhead.active == 0


# ---------------------------------------------------------------------- per-node choices


def test_node_overrides_exclusions_and_degradation(
    clock: ManualClock, name: str, bus: EventBus
) -> None:
    manager = DegradationManager({"fancy": ServiceLevel.FULL})
    fancy_calls = 0

    def fancy(state: State) -> dict[str, Any]:
        nonlocal fancy_calls
        fancy_calls += 1
        return {"answer": "fancy"}

    plain = Flaky(1)
    builder = chain(("plain", plain), ("fancy", fancy), ("raw", lambda s: {"log": ["raw"]}))
    graph = with_resilience(
        builder,
        full_policy(name, clock, bus),
        nodes={
            "fancy": ResiliencePolicy(
                feature="fancy", fallback=lambda s, e: {"answer": "plain answer"}
            ),
            "raw": None,
        },
        degradation=manager,
    ).compile()
    assert not isinstance(graph.nodes["raw"].bound, ResilientNode)
    assert graph.invoke({"value": 0})["answer"] == "fancy"
    manager.set_level(ServiceLevel.DEGRADED)
    assert graph.invoke({"value": 0})["answer"] == "plain answer"
    assert fancy_calls == 1


def test_configuration_errors(clock: ManualClock, name: str, bus: EventBus) -> None:
    builder = chain(("a", Flaky(0)))
    with pytest.raises(ConfigurationError, match="unknown nodes"):
        with_resilience(builder, full_policy(name, clock, bus), nodes={"missing": None})
    with pytest.raises(ConfigurationError, match="DegradationManager"):
        with_resilience(builder, ResiliencePolicy(feature="x"))
    with pytest.raises(ConfigurationError):
        with_resilience(object(), ResiliencePolicy())  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError):
        with_resilience(builder, ResiliencePolicy(), native_retry="sometimes")  # type: ignore[arg-type]


def test_breaker_shared_by_nodes_opens_for_all(
    clock: ManualClock, name: str, bus: EventBus
) -> None:
    breaker = CircuitBreaker(name, minimum_calls=2, window_size=2, clock=clock, events=bus)
    policy = ResiliencePolicy(
        breaker=breaker, fallback=lambda s, e: {"log": [type(e).__name__]}, events=bus
    )
    a, b = Flaky(99), Flaky(99)
    graph = with_resilience(chain(("a", a), ("b", b), ("c", Flaky(0))), policy).compile()
    assert graph.invoke({"value": 0})["log"] == [
        "ConnectionError",
        "ConnectionError",
        "CircuitOpenError",
    ]
    assert breaker.state is CircuitState.OPEN


def test_async_only_node_under_sync_invoke_keeps_langgraphs_error(
    clock: ManualClock, name: str, bus: EventBus
) -> None:
    async def only_async(state: State) -> dict[str, Any]:
        return {}

    graph = with_resilience(chain(("a", only_async)), full_policy(name, clock, bus)).compile()
    with pytest.raises(TypeError, match="No synchronous function"):
        graph.invoke({"value": 0})


def test_our_timeout_error_is_ours(clock: ManualClock, name: str, bus: EventBus) -> None:
    import time as _time

    def slow(state: State) -> dict[str, Any]:
        _time.sleep(0.2)
        return {}

    graph = with_resilience(
        chain(("slow", slow)), ResiliencePolicy(timeout=Timeout(0.02), events=bus)
    ).compile()
    with pytest.raises(NodeTimeoutError):
        graph.invoke({"value": 0})


def test_end_edges_untouched(clock: ManualClock, name: str, bus: EventBus) -> None:
    builder = chain(("a", Flaky(0)))
    builder.add_edge("a", END)
    graph = with_resilience(builder, full_policy(name, clock, bus)).compile()
    assert graph.invoke({"value": 0})["value"] == 1


@pytest.mark.parametrize("inner_wrapping", [False, True])
def test_subgraph_streaming_keeps_namespaces(
    inner_wrapping: bool, clock: ManualClock, name: str, bus: EventBus
) -> None:
    builder = chain(("sub", make_subgraph(lambda s: {"log": ["inner"]})))
    graph = with_resilience(
        builder, full_policy(name, clock, bus), subgraphs=inner_wrapping
    ).compile()
    namespaces = {ns for ns, _ in graph.stream({"value": 0}, subgraphs=True)}
    assert () in namespaces
    assert any(ns and ns[0].startswith("sub:") for ns in namespaces)
