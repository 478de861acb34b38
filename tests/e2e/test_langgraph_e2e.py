"""LangGraph end-to-end runs on ``ResilientSaver``, on both durable backends (Postgres, SQLite).

Every async test runs once per backend through the ``make_saver``/``saver`` fixtures. Where the
expected result is not obvious from the graph alone, the same scenario is also run on
LangGraph's own ``InMemorySaver`` and the two runs must agree.
"""

from __future__ import annotations

import asyncio
import itertools
import operator
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.channels import DeltaChannel
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.types import _DeltaSnapshot
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send, StateSnapshot, interrupt

from langgraph_resilient import ResilientSaver, SyncCallOnEventLoopError
from tests.conftest import (
    SaverFactory,
    backend_kwargs,
)
from tests.graphs import chain


def new_thread() -> RunnableConfig:
    return {"configurable": {"thread_id": f"e2e-{uuid.uuid4().hex}"}}


async def history(graph: Any, config: RunnableConfig) -> list[StateSnapshot]:
    return [snap async for snap in graph.aget_state_history(config)]


def summary(snapshots: Sequence[StateSnapshot]) -> list[tuple[Any, ...]]:
    """What two savers must agree on for a history (ids and timestamps differ by design)."""
    return [
        (s.values, s.next, s.metadata["source"], s.metadata["step"], len(s.tasks))
        for s in snapshots
    ]


# --------------------------------------------------------------------------- graphs


class ReviewState(TypedDict, total=False):
    topic: str
    draft: str
    decision: str
    log: Annotated[list[str], operator.add]


def review_builder(calls: Counter[str]) -> StateGraph:
    """write -> review (interrupts for a human decision) -> publish."""

    def write(state: ReviewState) -> dict[str, Any]:
        calls["write"] += 1
        return {"draft": f"draft about {state['topic']}", "log": ["write"]}

    def review(state: ReviewState) -> dict[str, Any]:
        calls["review"] += 1
        decision = interrupt({"question": "approve?", "draft": state["draft"]})
        return {"decision": decision, "log": [f"review:{decision}"]}

    def publish(state: ReviewState) -> dict[str, Any]:
        calls["publish"] += 1
        return {"log": [f"publish:{state['decision']}"]}

    builder = StateGraph(ReviewState)
    builder.add_node("write", write)
    builder.add_node("review", review)
    builder.add_node("publish", publish)
    builder.add_edge(START, "write")
    builder.add_edge("write", "review")
    builder.add_edge("review", "publish")
    builder.add_edge("publish", END)
    return builder


class ChainState(TypedDict):
    items: Annotated[list[str], operator.add]


def chain_builder(calls: Counter[str]) -> StateGraph:
    """a -> b -> c, each appending its name to ``items`` and counting its calls."""

    def step(name: str) -> Any:
        def node(state: ChainState) -> dict[str, Any]:
            calls[name] += 1
            return {"items": [name]}

        return node

    return chain(*((name, step(name)) for name in ("a", "b", "c")), state=ChainState)


# --------------------------------------------------------------------------- interrupts


async def test_interrupt_then_resume_on_another_saver(make_saver: SaverFactory) -> None:
    saver = await make_saver()
    calls: Counter[str] = Counter()
    builder = review_builder(calls)
    graph = builder.compile(checkpointer=saver)
    config = new_thread()

    out = await graph.ainvoke({"topic": "tides", "log": []}, config)

    expected_prompt = {"question": "approve?", "draft": "draft about tides"}
    assert [i.value for i in out["__interrupt__"]] == [expected_prompt]
    state = await graph.aget_state(config)
    assert state.next == ("review",)
    assert [i.value for task in state.tasks for i in task.interrupts] == [expected_prompt]
    assert state.values == {"topic": "tides", "draft": "draft about tides", "log": ["write"]}
    stored = await saver.aget_tuple(config)
    assert stored is not None
    assert [ch for _, ch, _ in stored.pending_writes or []].count("__interrupt__") == 1
    assert calls == Counter({"write": 1, "review": 1})

    # Any replica can resume: a second saver on the same database sees the interrupt.
    other = builder.compile(checkpointer=await make_saver())
    out = await other.ainvoke(Command(resume="yes"), config)

    assert out == {
        "topic": "tides",
        "draft": "draft about tides",
        "decision": "yes",
        "log": ["write", "review:yes", "publish:yes"],
    }
    assert calls == Counter({"write": 1, "review": 2, "publish": 1})
    final = await graph.aget_state(config)
    assert final.next == ()
    assert final.tasks == ()
    assert final.values == out


class SubState(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    answer: str


def subgraph_parent(calls: Counter[str]) -> StateGraph:
    def ask(state: SubState) -> dict[str, Any]:
        calls["ask"] += 1
        answer = interrupt({"q": "which colour?"})
        return {"answer": answer, "log": [f"ask:{answer}"]}

    def sub_done(state: SubState) -> dict[str, Any]:
        calls["sub_done"] += 1
        return {"log": ["sub_done"]}

    sub = StateGraph(SubState)
    sub.add_node("ask", ask)
    sub.add_node("sub_done", sub_done)
    sub.add_edge(START, "ask")
    sub.add_edge("ask", "sub_done")
    sub.add_edge("sub_done", END)
    # Compiled without a checkpointer: it inherits the parent's saver, in its own namespace.
    child = sub.compile()

    def before(state: SubState) -> dict[str, Any]:
        calls["before"] += 1
        return {"log": ["before"]}

    def after(state: SubState) -> dict[str, Any]:
        calls["after"] += 1
        return {"log": [f"after:{state['answer']}"]}

    parent = StateGraph(SubState)
    parent.add_node("before", before)
    parent.add_node("child", child)
    parent.add_node("after", after)
    parent.add_edge(START, "before")
    parent.add_edge("before", "child")
    parent.add_edge("child", "after")
    parent.add_edge("after", END)
    return parent


async def test_subgraph_interrupt_and_resume(saver: ResilientSaver) -> None:
    calls: Counter[str] = Counter()
    graph = subgraph_parent(calls).compile(checkpointer=saver)
    config = new_thread()

    out = await graph.ainvoke({"log": []}, config)

    assert [i.value for i in out["__interrupt__"]] == [{"q": "which colour?"}]
    state = await graph.aget_state(config, subgraphs=True)
    assert state.next == ("child",)
    (task,) = state.tasks
    assert [i.value for i in task.interrupts] == [{"q": "which colour?"}]
    assert isinstance(task.state, StateSnapshot)
    assert task.state.next == ("ask",)
    assert task.state.values == {"log": ["before"]}
    child_ns = task.state.config["configurable"]["checkpoint_ns"]
    assert child_ns.startswith("child:")
    namespaces = {t.config["configurable"]["checkpoint_ns"] async for t in saver.alist(config)}
    assert namespaces == {"", child_ns}
    assert calls == Counter({"before": 1, "ask": 1})

    out = await graph.ainvoke(Command(resume="teal"), config)

    assert out == {
        "log": ["before", "before", "ask:teal", "sub_done", "after:teal"],
        "answer": "teal",
    }
    assert calls == Counter({"before": 1, "ask": 2, "sub_done": 1, "after": 1})
    final = await graph.aget_state(config, subgraphs=True)
    assert final.next == ()
    assert final.tasks == ()

    # The same run on LangGraph's in-memory saver produces the same root history.
    reference = subgraph_parent(Counter()).compile(checkpointer=InMemorySaver())
    ref_config = new_thread()
    await reference.ainvoke({"log": []}, ref_config)
    await reference.ainvoke(Command(resume="teal"), ref_config)
    assert summary(await history(graph, config)) == summary(await history(reference, ref_config))


# --------------------------------------------------------------------------- time travel


async def test_time_travel_replay_and_fork_with_update_state(saver: ResilientSaver) -> None:
    calls: Counter[str] = Counter()
    graph = chain_builder(calls).compile(checkpointer=saver)
    config = new_thread()

    assert await graph.ainvoke({"items": ["x"]}, config) == {"items": ["x", "a", "b", "c"]}
    first_run = await history(graph, config)
    assert [(s.metadata["source"], s.metadata["step"], s.next) for s in first_run] == [
        ("loop", 3, ()),
        ("loop", 2, ("c",)),
        ("loop", 1, ("b",)),
        ("loop", 0, ("a",)),
        ("input", -1, ("__start__",)),
    ]
    for child, parent in itertools.pairwise(first_run):
        assert child.parent_config is not None
        assert (
            child.parent_config["configurable"]["checkpoint_id"]
            == (parent.config["configurable"]["checkpoint_id"])
        )
    head = first_run[0]
    past = first_run[2]  # after "a", before "b"
    assert past.values == {"items": ["x", "a"]}
    assert await graph.aget_state(past.config) == past

    # Replay from the past checkpoint: "a" is not run again, "b" and "c" are.
    replayed = await graph.ainvoke(None, past.config)
    assert replayed == {"items": ["x", "a", "b", "c"]}
    assert calls == Counter({"a": 1, "b": 2, "c": 2})
    after_replay = await history(graph, config)
    assert len(after_replay) == len(first_run) + 3
    new_head = after_replay[0]
    assert (
        new_head.config["configurable"]["checkpoint_id"]
        > (head.config["configurable"]["checkpoint_id"])
    )
    # The replayed branch hangs off the past checkpoint.
    cursor: StateSnapshot | None = new_head
    ancestors = []
    while cursor is not None and cursor.parent_config is not None:
        ancestors.append(cursor.parent_config["configurable"]["checkpoint_id"])
        cursor = await graph.aget_state(cursor.parent_config)
    assert past.config["configurable"]["checkpoint_id"] in ancestors
    assert head.config["configurable"]["checkpoint_id"] not in ancestors

    # Fork: edit the past checkpoint, then run on from the edit.
    fork_config = await graph.aupdate_state(past.config, {"items": ["forked"]})
    fork = await graph.aget_state(fork_config)
    assert fork.values == {"items": ["x", "a", "forked"]}
    assert fork.next == ("b",)
    assert fork.metadata["source"] == "update"
    assert fork.parent_config is not None
    assert (
        fork.parent_config["configurable"]["checkpoint_id"]
        == (past.config["configurable"]["checkpoint_id"])
    )
    forked = await graph.ainvoke(None, fork_config)
    assert forked == {"items": ["x", "a", "forked", "b", "c"]}
    assert calls == Counter({"a": 1, "b": 3, "c": 3})
    assert (await graph.aget_state(config)).values == forked

    # The original branch is untouched.
    assert (await graph.aget_state(head.config)).values == {"items": ["x", "a", "b", "c"]}
    assert await graph.aget_state(past.config) == past

    # Same sequence on InMemorySaver gives the same history.
    reference = chain_builder(Counter()).compile(checkpointer=InMemorySaver())
    ref_config = new_thread()
    await reference.ainvoke({"items": ["x"]}, ref_config)
    ref_past = (await history(reference, ref_config))[2]
    await reference.ainvoke(None, ref_past.config)
    ref_fork = await reference.aupdate_state(ref_past.config, {"items": ["forked"]})
    await reference.ainvoke(None, ref_fork)
    assert summary(await history(graph, config)) == summary(await history(reference, ref_config))


# --------------------------------------------------------------------------- Send


class FanState(TypedDict, total=False):
    jobs: list[int]
    results: Annotated[list[int], operator.add]
    total: int


def fan_builder(calls: Counter[str]) -> StateGraph:
    def fan_out(state: FanState) -> list[Send]:
        return [Send("square", {"n": n}) for n in state["jobs"]]

    def square(arg: dict[str, int]) -> dict[str, Any]:
        calls["square"] += 1
        return {"results": [arg["n"] ** 2]}

    def total(state: FanState) -> dict[str, Any]:
        calls["total"] += 1
        return {"total": sum(state["results"])}

    builder = StateGraph(FanState)
    builder.add_node("square", square)
    builder.add_node("total", total)
    builder.add_conditional_edges(START, fan_out, ["square"])
    builder.add_edge("square", "total")
    builder.add_edge("total", END)
    return builder


async def test_send_fan_out_with_reducer(saver: ResilientSaver) -> None:
    calls: Counter[str] = Counter()
    graph = fan_builder(calls).compile(checkpointer=saver)
    config = new_thread()

    out = await graph.ainvoke({"jobs": [1, 2, 3, 4, 5], "results": []}, config)

    assert sorted(out["results"]) == [1, 4, 9, 16, 25]
    assert out["total"] == 55
    assert calls == Counter({"square": 5, "total": 1})
    snaps = await history(graph, config)
    fanned = [s for s in snaps if "square" in s.next]
    assert len(fanned) == 1
    assert fanned[0].next == ("square",) * 5
    assert sorted(t.name for t in fanned[0].tasks) == ["square"] * 5
    assert (await graph.aget_state(config)).values == out

    reference = fan_builder(Counter()).compile(checkpointer=InMemorySaver())
    ref_config = new_thread()
    await reference.ainvoke({"jobs": [1, 2, 3, 4, 5], "results": []}, ref_config)
    ref_snaps = await history(reference, ref_config)

    def canonical(snapshots: list[StateSnapshot]) -> list[tuple[Any, ...]]:
        # Parallel Send results land in task order; compare them as multisets.
        return [
            (
                {k: sorted(v) if k == "results" else v for k, v in s.values.items()},
                s.next,
                s.metadata["source"],
                s.metadata["step"],
            )
            for s in snapshots
        ]

    assert canonical(snaps) == canonical(ref_snaps)


# --------------------------------------------------------------------------- durability


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
async def test_durability_modes_persist_expected_history(
    saver: ResilientSaver, durability: str
) -> None:
    graph = chain_builder(Counter()).compile(checkpointer=saver)
    config = new_thread()

    out = await graph.ainvoke({"items": ["x"]}, config, durability=durability)  # type: ignore[arg-type]

    assert out == {"items": ["x", "a", "b", "c"]}
    state = await graph.aget_state(config)
    assert state.values == out
    assert state.next == ()
    persisted = [(t.metadata["source"], t.metadata["step"]) async for t in saver.alist(config)]
    if durability == "exit":
        assert persisted == [("loop", 3)]
    else:
        assert persisted == [("loop", 3), ("loop", 2), ("loop", 1), ("loop", 0), ("input", -1)]

    reference = chain_builder(Counter()).compile(checkpointer=InMemorySaver())
    ref_config = new_thread()
    await reference.ainvoke({"items": ["x"]}, ref_config, durability=durability)  # type: ignore[arg-type]
    assert summary(await history(graph, config)) == summary(await history(reference, ref_config))


async def test_durability_exit_persists_interrupt_and_resumes(saver: ResilientSaver) -> None:
    calls: Counter[str] = Counter()
    graph = review_builder(calls).compile(checkpointer=saver)
    config = new_thread()

    await graph.ainvoke({"topic": "exit", "log": []}, config, durability="exit")
    state = await graph.aget_state(config)
    assert state.next == ("review",)
    assert len([t async for t in saver.alist(config)]) == 1

    out = await graph.ainvoke(Command(resume="ok"), config, durability="exit")
    assert out["log"] == ["write", "review:ok", "publish:ok"]
    assert calls == Counter({"write": 1, "review": 2, "publish": 1})
    assert len([t async for t in saver.alist(config)]) == 2


# --------------------------------------------------------------------------- failures


class ParallelState(TypedDict):
    out: Annotated[list[str], operator.add]


def parallel_builder(calls: Counter[str]) -> StateGraph:
    """START -> (ok | flaky) -> join; flaky fails on its first call only.

    flaky fails only after ok has finished, so the failure never cancels ok mid-flight and the
    test is about resuming, not about a race.
    """
    ok_done = asyncio.Event()

    async def ok(state: ParallelState) -> dict[str, Any]:
        calls["ok"] += 1
        ok_done.set()
        return {"out": ["ok"]}

    async def flaky(state: ParallelState) -> dict[str, Any]:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            await asyncio.wait_for(ok_done.wait(), timeout=5)
            await asyncio.sleep(0.05)  # let LangGraph record ok's result first
            raise RuntimeError("flaky failed on its first attempt")
        return {"out": ["flaky"]}

    def join(state: ParallelState) -> dict[str, Any]:
        calls["join"] += 1
        return {"out": ["join"]}

    builder = StateGraph(ParallelState)
    builder.add_node("ok", ok)
    builder.add_node("flaky", flaky)
    builder.add_node("join", join)
    builder.add_edge(START, "ok")
    builder.add_edge(START, "flaky")
    builder.add_edge(["ok", "flaky"], "join")
    builder.add_edge("join", END)
    return builder


async def test_failed_parallel_task_resumes_without_rerunning_successful_one(
    saver: ResilientSaver,
) -> None:
    calls: Counter[str] = Counter()
    graph = parallel_builder(calls).compile(checkpointer=saver)
    config = new_thread()

    with pytest.raises(RuntimeError, match="first attempt"):
        await graph.ainvoke({"out": []}, config)
    assert calls == Counter({"ok": 1, "flaky": 1})

    # The successful task's writes and the failure are stored against the checkpoint.
    stored = await saver.aget_tuple(config)
    assert stored is not None
    writes = [(ch, v) for _, ch, v in stored.pending_writes or []]
    assert ("out", ["ok"]) in writes
    assert [ch for ch, _ in writes].count("out") == 1  # nothing from flaky
    errors = [v for ch, v in writes if ch == "__error__"]
    assert len(errors) == 1
    assert "first attempt" in str(errors[0])
    state = await graph.aget_state(config)
    assert {t.name for t in state.tasks} == {"ok", "flaky"}
    (failed,) = [t for t in state.tasks if t.error is not None]
    assert failed.name == "flaky"

    out = await graph.ainvoke(None, config)

    assert sorted(out["out"][:2]) == ["flaky", "ok"]
    assert out["out"][2:] == ["join"]
    assert calls == Counter({"ok": 1, "flaky": 2, "join": 1})


# --------------------------------------------------------------------------- lifecycle


class TurnState(TypedDict, total=False):
    turns: Annotated[list[str], operator.add]
    approved: str


def turns_builder() -> StateGraph:
    def reply(state: TurnState) -> dict[str, Any]:
        return {"turns": [f"reply{len(state['turns'])}"]}

    def gate(state: TurnState) -> dict[str, Any]:
        if len(state["turns"]) < 6:
            return {}
        return {"approved": interrupt("approve the long conversation?")}

    builder = StateGraph(TurnState)
    builder.add_node("reply", reply)
    builder.add_node("gate", gate)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", "gate")
    builder.add_edge("gate", END)
    return builder


async def test_state_survives_closing_and_reopening_the_saver(make_saver: SaverFactory) -> None:
    saver = await make_saver()
    graph = turns_builder().compile(checkpointer=saver)
    config = new_thread()
    for i in range(3):
        await graph.ainvoke({"turns": [f"user{i}"]}, config)
    state = await graph.aget_state(config)
    assert state.next == ("gate",)  # the third turn stopped at the interrupt
    before_close = await history(graph, config)
    await saver.__aexit__(None, None, None)

    reopened = await make_saver()
    graph = turns_builder().compile(checkpointer=reopened)

    assert await history(graph, config) == before_close
    assert await graph.aget_state(config) == state
    out = await graph.ainvoke(Command(resume="yes"), config)
    assert out == {
        "turns": ["user0", "reply1", "user1", "reply3", "user2", "reply5"],
        "approved": "yes",
    }
    assert len(await history(graph, config)) == len(before_close) + 1


async def test_replicas_take_turns_on_one_thread_without_stale_reads(
    make_saver: SaverFactory,
) -> None:
    """Turns of one conversation alternate between two savers (two replicas behind a load
    balancer); each one sees the other's last acknowledged turn."""
    graphs = [
        turns_builder().compile(checkpointer=await make_saver()),
        turns_builder().compile(checkpointer=await make_saver()),
    ]
    config = new_thread()
    expected: list[str] = []
    for turn in range(3):
        graph, other = graphs[turn % 2], graphs[(turn + 1) % 2]
        before = await graph.aget_state(config)  # reads (and may cache) the current head
        assert before.values.get("turns", []) == expected
        out = await graph.ainvoke({"turns": [f"user{turn}"]}, config)
        expected = [*expected, f"user{turn}", f"reply{2 * turn + 1}"]
        assert out["turns"] == expected
        seen = await other.aget_state(config)
        assert seen.values["turns"] == expected
        assert seen.config == (await graph.aget_state(config)).config
    assert summary(await history(graphs[0], config)) == summary(await history(graphs[1], config))


async def test_delete_thread_removes_all_state(make_saver: SaverFactory) -> None:
    saver, replica = await make_saver(), await make_saver()
    graph = subgraph_parent(Counter()).compile(checkpointer=saver)
    on_replica = subgraph_parent(Counter()).compile(checkpointer=replica)
    doomed, kept = new_thread(), new_thread()
    for config in (doomed, kept):
        await graph.ainvoke({"log": []}, config)  # stops inside the subgraph
    namespaces = {t.config["configurable"]["checkpoint_ns"] async for t in saver.alist(doomed)}
    assert len(namespaces) == 2  # root and the subgraph's
    kept_history = await history(graph, kept)
    # The other replica has read the thread (and may have cached it) before the delete.
    assert (await on_replica.aget_state(doomed)).next == ("child",)

    await saver.adelete_thread(doomed["configurable"]["thread_id"])

    for reader, compiled in ((saver, graph), (replica, on_replica)):
        assert await reader.aget_tuple(doomed) is None
        assert [t async for t in reader.alist(doomed)] == []  # every namespace
        state = await compiled.aget_state(doomed)
        assert state.values == {}
        assert state.next == ()
        assert await history(compiled, doomed) == []
        assert await history(compiled, kept) == kept_history
        all_threads = {t.config["configurable"]["thread_id"] async for t in reader.alist(None)}
        assert doomed["configurable"]["thread_id"] not in all_threads

    # The thread id can be used again and starts from scratch.
    out = await graph.ainvoke({"log": ["again"]}, doomed)
    assert out["log"] == ["again", "before"]
    assert len(await history(graph, doomed)) == 3
    assert (await on_replica.aget_state(doomed)).values == {"log": ["again", "before"]}


# --------------------------------------------------------------------------- DeltaChannel


def append_batches(state: list[str], writes: Sequence[list[str]]) -> list[str]:
    return [*state, *(item for batch in writes for item in batch)]


class DeltaState(TypedDict):
    items: Annotated[list[str], DeltaChannel(append_batches, snapshot_frequency=3)]


def delta_builder() -> StateGraph:
    def respond(state: DeltaState) -> dict[str, Any]:
        # Depends on the rebuilt value, so a wrong rebuild shows in every later turn.
        return {"items": [f"reply{len(state['items'])}"]}

    builder = StateGraph(DeltaState)
    builder.add_node("respond", respond)
    builder.add_edge(START, "respond")
    builder.add_edge("respond", END)
    return builder


async def test_delta_channel_rebuilds_across_turns_reopen_and_prune(
    make_saver: SaverFactory,
) -> None:
    turns = 9
    reference = delta_builder().compile(checkpointer=InMemorySaver())
    ref_config = new_thread()
    expected = [await reference.ainvoke({"items": [f"u{i}"]}, ref_config) for i in range(turns)]
    ref_history = await history(reference, ref_config)

    saver = await make_saver()
    graph = delta_builder().compile(checkpointer=saver)
    config = new_thread()
    for i in range(6):
        assert await graph.ainvoke({"items": [f"u{i}"]}, config) == expected[i]
    assert summary(await history(graph, config)) == summary(ref_history[3 * (turns - 6) :])

    # Deltas are really in use: most checkpoints store no value for "items", a few snapshots.
    stored = [t.checkpoint["channel_values"].get("items") async for t in saver.alist(config)]
    assert any(isinstance(v, _DeltaSnapshot) for v in stored)
    assert sum(v is None for v in stored) > len(stored) // 2
    assert not any(isinstance(v, list) for v in stored)

    # A reopened saver rebuilds the same state.
    await saver.__aexit__(None, None, None)
    saver = await make_saver()
    graph = delta_builder().compile(checkpointer=saver)
    assert (await graph.aget_state(config)).values == expected[5]
    assert await graph.ainvoke({"items": ["u6"]}, config) == expected[6]
    assert await graph.ainvoke({"items": ["u7"]}, config) == expected[7]
    assert summary(await history(graph, config)) == summary(ref_history[3:])

    # keep_latest prunes history but keeps what the delta channel needs to rebuild.
    before_prune = len([t async for t in saver.alist(config)])
    await saver.aprune([config["configurable"]["thread_id"]], strategy="keep_latest")
    after_prune = [t async for t in saver.alist(config)]
    assert 1 <= len(after_prune) < before_prune
    assert (await graph.aget_state(config)).values == expected[7]
    assert await graph.ainvoke({"items": ["u8"]}, config) == expected[8]

    # And after pruning again, through yet another saver.
    await saver.aprune([config["configurable"]["thread_id"]], strategy="keep_latest")
    graph = delta_builder().compile(checkpointer=await make_saver())
    assert (await graph.aget_state(config)).values == expected[8]


# --------------------------------------------------------------------------- sync programs


@contextmanager
def sync_saver(backend: str, tmp_path: Path, prefix: str) -> Iterator[ResilientSaver]:
    """A saver entered with plain ``with``, as a sync program would, on the test's backend."""
    kwargs = backend_kwargs(backend, tmp_path / "sync-state.db")
    with ResilientSaver.from_urls(prefix=prefix, **kwargs) as saver:
        yield saver


def test_sync_invoke_and_stream_with_interrupt_and_resume(
    backend: str, tmp_path: Path, sync_prefix: str
) -> None:
    calls: Counter[str] = Counter()
    builder = review_builder(calls)
    invoked, streamed = new_thread(), new_thread()
    with sync_saver(backend, tmp_path, sync_prefix) as saver:
        graph = builder.compile(checkpointer=saver)

        out = graph.invoke({"topic": "sync", "log": []}, invoked)
        assert [i.value for i in out["__interrupt__"]] == [
            {"question": "approve?", "draft": "draft about sync"}
        ]
        assert graph.get_state(invoked).next == ("review",)
        out = graph.invoke(Command(resume="yes"), invoked)
        assert out["log"] == ["write", "review:yes", "publish:yes"]

        updates = list(graph.stream({"topic": "stream", "log": []}, streamed))
        assert [next(iter(u)) for u in updates] == ["write", "__interrupt__"]
        assert graph.get_state(streamed).next == ("review",)
        updates = list(graph.stream(Command(resume="no"), streamed))
        assert updates == [
            {"review": {"decision": "no", "log": ["review:no"]}},
            {"publish": {"log": ["publish:no"]}},
        ]
        values = list(graph.stream(None, streamed, stream_mode="values"))
        assert values[-1]["log"] == ["write", "review:no", "publish:no"]
        sync_history = list(graph.get_state_history(streamed))
        assert [s.metadata["step"] for s in sync_history] == [3, 2, 1, 0, -1]
        assert calls == Counter({"write": 2, "review": 4, "publish": 2})

    # A new process (a new sync saver on the same database) sees everything.
    with sync_saver(backend, tmp_path, sync_prefix) as saver:
        graph = builder.compile(checkpointer=saver)
        assert graph.get_state(invoked).values["decision"] == "yes"
        assert list(graph.get_state_history(streamed)) == sync_history
        assert len(list(saver.list(None))) == 2 * len(sync_history)


async def test_sync_call_on_the_saver_loop_raises_instead_of_deadlocking(
    saver: ResilientSaver,
) -> None:
    graph = chain_builder(Counter()).compile(checkpointer=saver)
    config = new_thread()
    await graph.ainvoke({"items": []}, config)
    stored = await saver.aget_tuple(config)
    assert stored is not None

    with pytest.raises(SyncCallOnEventLoopError, match="async method"):
        saver.get_tuple(config)
    with pytest.raises(SyncCallOnEventLoopError):
        list(saver.list(config))
    with pytest.raises(SyncCallOnEventLoopError):
        saver.put_writes(stored.config, [("items", ["x"])], "task")
    with pytest.raises(SyncCallOnEventLoopError):
        saver.delete_thread(config["configurable"]["thread_id"])
    with pytest.raises(SyncCallOnEventLoopError):
        graph.invoke({"items": []}, new_thread())

    # Nothing was written by the refused calls, and the loop is still healthy.
    again = await saver.aget_tuple(config)
    assert again is not None
    assert again.pending_writes == stored.pending_writes
    # A sync call from another thread is fine: it runs on the saver's loop.
    from_thread = await asyncio.to_thread(saver.get_tuple, config)
    assert from_thread is not None
    assert from_thread.checkpoint == stored.checkpoint
