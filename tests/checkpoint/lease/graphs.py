"""Graphs and helpers shared by the lease tests and their worker processes."""

from __future__ import annotations

import asyncio
import operator
import time
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.graph import StateGraph

from langgraph_resilient import ResilientSaver
from tests.graphs import Log, chain

TurnState = Log


def takeover_graph() -> StateGraph[TurnState]:
    """START -> work -> finish -> END (sync and async). ``work`` signals a marker file and
    stalls when asked (``configurable.marker`` / ``configurable.stall_s``), so a test can freeze
    it mid-turn."""

    def signal(conf: dict[str, Any]) -> None:
        if conf.get("marker"):
            with open(conf["marker"], "w") as marker:
                marker.write("in node")

    def work(state: TurnState, config: RunnableConfig) -> dict[str, Any]:
        conf = config["configurable"]
        signal(conf)
        time.sleep(float(conf.get("stall_s") or 0))
        return {"log": [f"work:{conf['worker']}"]}

    async def awork(state: TurnState, config: RunnableConfig) -> dict[str, Any]:
        conf = config["configurable"]
        signal(conf)
        await asyncio.sleep(float(conf.get("stall_s") or 0))
        return {"log": [f"work:{conf['worker']}"]}

    def finish(state: TurnState, config: RunnableConfig) -> dict[str, Any]:
        return {"log": [f"finish:{config['configurable']['worker']}"]}

    return chain(("work", RunnableLambda(work, afunc=awork, name="work")), ("finish", finish))


class RaceState(TypedDict, total=False):
    turns: Annotated[list[str], operator.add]


def race_graph(intervals: list[tuple[str, float, float]]) -> StateGraph[RaceState]:
    """START -> enter -> middle -> leave -> END; ``enter``/``leave`` record the run's interval
    (system-wide monotonic clock, comparable across processes) into ``intervals``."""
    starts: dict[str, float] = {}

    async def enter(state: RaceState, config: RunnableConfig) -> dict[str, Any]:
        starts[config["configurable"]["thread_id"]] = time.monotonic()
        return {}

    async def middle(state: RaceState) -> dict[str, Any]:
        await asyncio.sleep(0.002)  # widen the window an overlap would show in
        return {}

    async def leave(state: RaceState, config: RunnableConfig) -> dict[str, Any]:
        tid = config["configurable"]["thread_id"]
        intervals.append((tid, starts.pop(tid), time.monotonic()))
        return {}

    return chain(("enter", enter), ("middle", middle), ("leave", leave), state=RaceState)


class RecordingSaver(ResilientSaver):
    """A ResilientSaver that records the outcome of every put and put_writes."""

    calls: list[tuple[str, str]]

    def _record(self, op: str, outcome: str) -> None:
        self.__dict__.setdefault("calls", []).append((op, outcome))

    async def aput(self, *args: Any, **kwargs: Any) -> Any:
        try:
            result = await super().aput(*args, **kwargs)
        except Exception as exc:
            self._record("put", type(exc).__name__)
            raise
        self._record("put", "ok")
        return result

    async def aput_writes(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().aput_writes(*args, **kwargs)
        except Exception as exc:
            self._record("put_writes", type(exc).__name__)
            raise
        self._record("put_writes", "ok")


def saver_kwargs(
    backend: str, prefix: str, pg_url: str, sqlite_path: str, redis_url: str | None
) -> dict[str, Any]:
    """``from_urls`` arguments for a test backend (``redis_url`` None: no Redis at all)."""
    kwargs: dict[str, Any] = {"prefix": prefix}
    if backend == "postgres":
        kwargs["postgres_url"] = pg_url
    else:
        kwargs["sqlite_path"] = sqlite_path
    if redis_url is not None:
        kwargs["redis_url"] = redis_url
        kwargs["redis_socket_timeout_s"] = 0.2
    return kwargs


def assert_linear(saver: ResilientSaver, thread_id: str) -> int:
    """No two checkpoints of the thread share a parent, and every parent exists (one chain).
    Returns the number of checkpoints."""
    tuples = list(saver.list({"configurable": {"thread_id": thread_id}}))
    return check_linear([(t.config, t.parent_config) for t in tuples])


def check_linear(pairs: list[tuple[Any, Any]]) -> int:
    """Per namespace: no two checkpoints share a parent, every parent exists, one root.
    ``pairs`` are ``(config, parent_config)`` of ``list()``. Returns the number of checkpoints."""
    by_ns: dict[str, list[tuple[str, str | None]]] = {}
    for conf, parent in pairs:
        c = conf["configurable"]
        by_ns.setdefault(c.get("checkpoint_ns", ""), []).append(
            (
                c["checkpoint_id"],
                None if parent is None else parent["configurable"]["checkpoint_id"],
            )
        )
    for ns, links in by_ns.items():
        ids = {cid for cid, _ in links}
        parents = [p for _, p in links if p is not None]
        assert len(parents) == len(set(parents)), f"{ns!r}: two checkpoints share a parent"
        assert set(parents) <= ids, f"{ns!r}: a checkpoint's parent is missing"
        assert len(links) - len(parents) <= 1, f"{ns!r}: more than one root"
    return len(pairs)
