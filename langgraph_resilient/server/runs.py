"""Runs: validating a run request, holding the thread's lease, streaming the graph.

Every run on a thread holds the thread's fenced lease (``saver.lock_thread``) from before its
first write to after its last, so two replicas never run one thread at once and a replica
that stalled past its lease writes nothing. ``multitask_strategy="reject"`` asks for the lease
without waiting (409 when another run holds it); ``"enqueue"`` waits up to
``enqueue_wait_s`` for it (then 409). ``"interrupt"`` and ``"rollback"`` are refused (422):
cancelling a run that another replica executes needs a cancel channel this server does not
have yet (docs/server.md).

A run executes in its own task, so that a request's disconnect and a drain can stop it: on
disconnect (``on_disconnect="cancel"``, the default) the task is cancelled; on drain it is
stopped at its next step boundary (after a checkpoint), or cancelled when the boundary does
not come. Either way the lease is released and the thread record gets the run's outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass, field
from typing import Any

from langgraph.types import Command, Send

from langgraph_resilient.errors import LockTimeoutError
from langgraph_resilient.server import metrics, serde
from langgraph_resilient.server.errors import ApiError, not_found
from langgraph_resilient.server.graphs import AnyGraph, GraphRegistry, ServedGraph
from langgraph_resilient.server.models import RunCommand, RunCreate
from langgraph_resilient.server.state import interrupt_json
from langgraph_resilient.server.stream import EventMapper, graph_modes
from langgraph_resilient.server.threads import ThreadStore

log = logging.getLogger("langgraph_resilient.server")

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}
_END = object()


def check_input(schema: dict[str, Any] | None, value: Any) -> None:
    """Refuse an input the graph's input schema refuses: a non-object for an object schema,
    or a top-level field of the wrong JSON type (422 naming the field). Fields the schema
    does not name pass, as LangGraph ignores them."""
    if value is None or not schema or schema.get("type") != "object":
        return
    if not isinstance(value, dict):
        raise ApiError(422, "input: the graph's input is an object", errors=[{"field": "input"}])
    problems = []
    for key, item in value.items():
        prop = (schema.get("properties") or {}).get(key)
        if not isinstance(prop, dict) or item is None:
            continue
        raw = (
            [prop.get("type")]
            if "type" in prop
            else [
                option.get("type") for option in prop.get("anyOf", []) if isinstance(option, dict)
            ]
        )
        kinds: list[str] = [k for k in raw if isinstance(k, str)]
        if "null" in kinds or not kinds or any(k not in _JSON_TYPES for k in kinds):
            continue
        allowed = tuple(t for k in kinds for t in _JSON_TYPES[k])
        wrong_bool = isinstance(item, bool) and bool not in allowed
        if not isinstance(item, allowed) or wrong_bool:
            problems.append({"field": f"input.{key}", "message": f"expected {' or '.join(kinds)}"})
    if problems:
        detail = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        raise ApiError(
            422, f"the graph's input schema refuses the input: {detail}", errors=problems
        )


def _goto(value: Any) -> Any:
    if isinstance(value, dict):
        if not isinstance(value.get("node"), str):
            raise ApiError(422, "command.goto: a Send needs a 'node' name")
        return Send(value["node"], value.get("input"))
    if isinstance(value, list):
        return [_goto(v) for v in value]
    return value


def _command(command: RunCommand) -> Command[Any]:
    kwargs: dict[str, Any] = {}
    fields = command.model_fields_set
    if "update" in fields and command.update is not None:
        kwargs["update"] = command.update
    if "resume" in fields:
        kwargs["resume"] = command.resume
    if "goto" in fields and command.goto is not None:
        kwargs["goto"] = _goto(command.goto)
    if not kwargs:
        raise ApiError(422, "command: give at least one of resume, update, goto")
    return Command(**kwargs)


@dataclass
class RunPlan:
    """A validated run, ready to execute."""

    run_id: str
    thread_id: str | None
    served: ServedGraph
    graph: AnyGraph
    input: Any
    config: dict[str, Any]
    kwargs: dict[str, Any]
    requested: list[Any]
    subgraphs: bool
    wait_s: float
    cancel_on_disconnect: bool


@dataclass(eq=False)  # hashed by identity: tracked in a set
class RunHandle:
    """A started run: its events and its task."""

    plan: RunPlan
    queue: asyncio.Queue[tuple[str, Any] | object] = field(default_factory=asyncio.Queue)
    started: asyncio.Future[None] | None = None
    """Resolved once the run may be answered: its lease is held and its thread marked busy."""
    task: asyncio.Task[None] | None = None
    marking: asyncio.Task[None] | None = None
    """Marks the thread busy (``ThreadStore.start_run``) while the graph starts."""
    stop_requested: bool = False
    detached: bool = False
    """Nobody reads the events (``runs/wait``, or the client left): they are not made."""
    result: Any = None
    status: str = "pending"
    _cancelled: bool = False

    def emit(self, event: str, data: Any) -> None:
        if not self.detached:
            self.queue.put_nowait((event, data))

    async def next_events(self) -> tuple[list[tuple[str, Any]], bool]:
        """Wait for the next event; return it with every event queued behind it (so that the
        response writes them in one chunk), and whether the run ended."""
        queue = self.queue
        item = await queue.get()
        events: list[tuple[str, Any]] = []
        while item is not _END:
            assert isinstance(item, tuple)
            events.append(item)
            if queue.empty():
                return events, False
            item = queue.get_nowait()
        return events, True

    def detach(self, cancel: bool) -> None:
        """The client is gone: cancel the run, or let it finish unobserved."""
        self.detached = True
        # Once: a second cancel() would interrupt the run recording its cancellation.
        if cancel and not self._cancelled and self.task is not None and not self.task.done():
            self._cancelled = True
            self.task.cancel()

    def client_gone(self) -> None:
        """The client disconnected: detach (``plan.cancel_on_disconnect`` says whether the run
        is cancelled) and wake the response waiting for events."""
        self.detach(cancel=self.plan.cancel_on_disconnect)
        self.queue.put_nowait(_END)


def _marked(handle: RunHandle, marking: asyncio.Task[None]) -> None:
    """The thread is marked busy (or could not be): answer the run's request, or fail it and
    stop the graph that started meanwhile."""
    started = handle.started
    assert started is not None
    if started.done():  # the request was given up
        return
    if marking.cancelled():
        started.cancel()
        return
    error = marking.exception()
    if error is None:
        started.set_result(None)
        return
    started.set_exception(error)
    handle.detach(cancel=True)


class RunManager:
    """Validates, starts and tracks the runs of one server process."""

    def __init__(
        self,
        *,
        saver: Any,
        threads: ThreadStore,
        registry: GraphRegistry,
        lease_ttl_s: float,
        enqueue_wait_s: float,
        cancel_on_disconnect: bool,
    ) -> None:
        self.saver = saver
        self.threads = threads
        self.registry = registry
        self.lease_ttl_s = lease_ttl_s
        self.enqueue_wait_s = enqueue_wait_s
        self.cancel_on_disconnect = cancel_on_disconnect
        self.active: set[RunHandle] = set()

    # ------------------------------------------------------------------ validation

    async def plan(self, body: RunCreate, thread_id: str | None) -> RunPlan:
        """Check a run request; nothing is written until every check passed (404/409/422)."""
        served = self.registry.find(body.assistant_id)
        if served is None:
            raise not_found(f"assistant {body.assistant_id!r}")
        if body.multitask_strategy in ("interrupt", "rollback"):
            raise ApiError(
                422,
                f"multitask_strategy {body.multitask_strategy!r} is not supported by this "
                "server: use 'reject' (409 while the thread runs) or 'enqueue' (wait for it)",
            )
        for name, value in (
            ("webhook", body.webhook),
            ("after_seconds", body.after_seconds),
        ):
            if value is not None:
                raise ApiError(422, f"{name}: not supported by this server (docs/server.md)")
        if body.stream_resumable:
            raise ApiError(422, "stream_resumable: resumable streams are not supported")
        if body.input is not None and body.command is not None:
            raise ApiError(422, "give either input or command, not both")
        check_input(served.input_schema, body.input)
        graph = served.graph if thread_id is not None else served.stateless
        nodes = set(graph.nodes)
        for name, nodes_given in (
            ("interrupt_before", body.interrupt_before),
            ("interrupt_after", body.interrupt_after),
        ):
            if isinstance(nodes_given, list) and (
                unknown := [n for n in nodes_given if n not in nodes]
            ):
                raise ApiError(422, f"{name}: unknown node(s) {unknown}; nodes: {sorted(nodes)}")
        run_input: Any = _command(body.command) if body.command is not None else body.input
        run_id = str(uuid.uuid4())
        config_body = body.config.model_dump(exclude_none=True) if body.config else {}
        configurable = dict(config_body.pop("configurable", None) or {})
        checkpoint = body.checkpoint
        if thread_id is not None:
            configurable["thread_id"] = thread_id
            checkpoint_id = body.checkpoint_id or (checkpoint.checkpoint_id if checkpoint else None)
            if checkpoint_id:
                configurable["checkpoint_id"] = checkpoint_id
                configurable["checkpoint_ns"] = checkpoint.checkpoint_ns if checkpoint else ""
        metadata = {
            **(body.metadata or {}),
            "run_id": run_id,
            "graph_id": served.graph_id,
            "assistant_id": served.assistant_id,
        }
        if thread_id is not None:
            metadata["thread_id"] = thread_id
        config = {
            **config_body,
            "configurable": configurable,
            "metadata": metadata,
            "run_id": uuid.UUID(run_id),
        }
        requested = (
            [body.stream_mode] if isinstance(body.stream_mode, str) else list(body.stream_mode)
        )
        kwargs: dict[str, Any] = {
            "stream_mode": graph_modes(requested),
            "subgraphs": body.stream_subgraphs,
        }
        if body.interrupt_before is not None:
            kwargs["interrupt_before"] = body.interrupt_before
        if body.interrupt_after is not None:
            kwargs["interrupt_after"] = body.interrupt_after
        if body.context is not None:
            kwargs["context"] = body.context
        durability = body.durability
        if durability is None and body.checkpoint_during is not None:
            durability = "async" if body.checkpoint_during else "exit"
        if durability is not None and thread_id is not None:
            kwargs["durability"] = durability
        cancel = self.cancel_on_disconnect
        if body.on_disconnect is not None:
            cancel = body.on_disconnect == "cancel"
        plan = RunPlan(
            run_id=run_id,
            thread_id=thread_id,
            served=served,
            graph=graph,
            input=run_input,
            config=config,
            kwargs=kwargs,
            requested=requested,
            subgraphs=body.stream_subgraphs,
            wait_s=0.0 if body.multitask_strategy == "reject" else self.enqueue_wait_s,
            cancel_on_disconnect=cancel,
        )
        if thread_id is not None:
            await self._check_thread(plan, body)
        return plan

    async def _check_thread(self, plan: RunPlan, body: RunCreate) -> None:
        assert plan.thread_id is not None
        record = await self.threads.get(plan.thread_id)
        checkpoint_id = plan.config["configurable"].get("checkpoint_id")
        if record is None:
            if body.if_not_exists != "create":
                raise not_found(
                    f"thread {plan.thread_id!r} (create it first, or pass if_not_exists='create')"
                )
            if checkpoint_id:
                raise not_found(f"checkpoint {checkpoint_id!r} of thread {plan.thread_id!r}")
            await self.threads.create(plan.thread_id, {}, if_exists="do_nothing")
            return
        if checkpoint_id:
            configurable = plan.config["configurable"]
            found = await self.saver.aget_tuple({"configurable": dict(configurable)})
            if found is None:
                raise not_found(f"checkpoint {checkpoint_id!r} of thread {plan.thread_id!r}")
            head = await self.saver.aget_tuple(
                {"configurable": {"thread_id": plan.thread_id, "checkpoint_ns": ""}}
            )
            if head is None or head.config["configurable"]["checkpoint_id"] != checkpoint_id:
                plan.graph = plan.served.forking  # time travel: a new branch of history

    # ------------------------------------------------------------------ execution

    async def start(self, plan: RunPlan, *, events: bool = True) -> RunHandle:
        """Take the thread's lease and start the run; raises 409 while another run holds it.
        ``events=False``: the caller wants the result only (``runs/wait``)."""
        loop = asyncio.get_running_loop()
        handle = RunHandle(plan=plan, started=loop.create_future(), detached=not events)
        handle.task = asyncio.create_task(self._execute(handle), name=f"run-{plan.run_id}")
        self.active.add(handle)
        handle.task.add_done_callback(lambda _: self.active.discard(handle))
        assert handle.started is not None
        try:
            await handle.started
        except LockTimeoutError as exc:
            metrics.RUNS.labels(plan.served.graph_id, "rejected").inc()
            raise ApiError(
                409,
                f"thread {plan.thread_id!r} is running another run"
                + (f" (waited {plan.wait_s:g} s)" if plan.wait_s else "")
                + f": {exc}",
            ) from exc
        except asyncio.CancelledError:
            handle.detach(cancel=True)
            raise
        return handle

    async def _execute(self, handle: RunHandle) -> None:
        plan = handle.plan
        assert handle.started is not None
        stack = AsyncExitStack()
        try:
            if plan.thread_id is not None:
                lease = await stack.enter_async_context(
                    self.saver.lock_thread(
                        plan.thread_id, ttl_s=self.lease_ttl_s, wait_s=plan.wait_s
                    )
                )
                task = asyncio.current_task()
                loop = asyncio.get_running_loop()

                def lost(_: Any) -> None:  # writes would be refused: stop the run
                    if task is not None:
                        loop.call_soon_threadsafe(task.cancel)

                lease.on_lost(lost)
                # One round trip off the run's path: the graph starts while the thread is
                # marked busy, and the run is answered (status, first event) once it is.
                handle.marking = asyncio.create_task(
                    self.threads.start_run(
                        plan.thread_id,
                        {
                            "graph_id": plan.served.graph_id,
                            "assistant_id": plan.served.assistant_id,
                        },
                    )
                )
                handle.marking.add_done_callback(lambda marking: _marked(handle, marking))
        except BaseException as exc:
            await stack.aclose()
            if isinstance(exc, asyncio.CancelledError):
                handle.started.cancel()
                raise
            handle.started.set_exception(exc)
            return
        if handle.marking is None:
            handle.started.set_result(None)
        metrics.RUNS_IN_FLIGHT.inc()
        try:
            async with stack:
                await self._stream(handle)
        finally:
            metrics.RUNS_IN_FLIGHT.dec()
            metrics.RUNS.labels(plan.served.graph_id, handle.status).inc()
            handle.queue.put_nowait(_END)

    async def _stream(self, handle: RunHandle) -> None:
        plan = handle.plan
        mapper = EventMapper(plan.requested, plan.subgraphs)
        handle.emit("metadata", {"run_id": plan.run_id, "attempt": 1})
        last_values: Any = None
        interrupted = False
        error: BaseException | None = None
        stopped = False
        try:
            stream_of: Any = plan.graph.astream  # kwargs are validated in plan()
            async with aclosing(stream_of(plan.input, plan.config, **plan.kwargs)) as stream:
                async for item in stream:
                    if plan.subgraphs:
                        ns, mode, chunk = item
                    else:
                        ns, (mode, chunk) = (), item
                    if not ns:
                        if mode == "values":
                            last_values = chunk
                        elif mode == "updates" and isinstance(chunk, dict):
                            interrupted = interrupted or "__interrupt__" in chunk
                    if not handle.detached:
                        for event in mapper.events(ns, mode, chunk):
                            handle.emit(*event)
                    if handle.stop_requested and not ns and mode == "values":
                        stopped = True  # a step boundary: its checkpoint is written
                        break
        except asyncio.CancelledError:
            handle.status = "cancelled"
            await self._finish(handle, last_values, "cancelled")
            raise
        except Exception as exc:
            error = exc
            log.info("run %s on thread %s failed: %r", plan.run_id, plan.thread_id, exc)
            handle.emit("error", {"error": type(exc).__name__, "message": str(exc)})
        if error is not None:
            handle.status = "error"
            handle.result = {"__error__": {"error": type(error).__name__, "message": str(error)}}
            await self._finish(handle, last_values, "error")
            return
        handle.status = "cancelled" if stopped else "interrupted" if interrupted else "success"
        handle.result = last_values if last_values is not None else {}
        await self._finish(handle, last_values, handle.status)

    async def _finish(self, handle: RunHandle, values: Any, outcome: str) -> None:
        """Write the run's outcome to the thread record (still under the lease)."""
        plan = handle.plan
        if plan.thread_id is None:
            return
        status = {"success": "idle", "interrupted": "interrupted", "error": "error"}.get(
            outcome, "idle"
        )
        interrupts: dict[str, Any] = {}
        if outcome in ("interrupted", "cancelled"):
            # The stream does not say which task an interrupt belongs to; the state does.
            try:
                snapshot = await plan.graph.aget_state(
                    {"configurable": {"thread_id": plan.thread_id}}
                )
                values = snapshot.values
                for task in snapshot.tasks:
                    if task.interrupts:
                        interrupts[task.id] = [interrupt_json(i) for i in task.interrupts]
                status = "interrupted" if (interrupts or snapshot.next) else "idle"
            except Exception as exc:  # the outcome is still worth recording
                log.warning(
                    "thread %s: reading the state after a run failed: %r", plan.thread_id, exc
                )
        if isinstance(values, dict):
            values = {k: v for k, v in values.items() if k != "__interrupt__"}
        if handle.marking is not None:
            # Busy is written before the outcome; a failure was the request's answer already.
            with contextlib.suppress(Exception):
                await handle.marking
        try:
            await self.threads.finish_run(
                plan.thread_id,
                status,
                serde.dumps(values).decode() if values is not None else None,
                serde.dumps(interrupts).decode(),
            )
        except Exception as exc:
            log.warning("thread %s: storing the run's outcome failed: %r", plan.thread_id, exc)

    # ------------------------------------------------------------------ drain

    async def drain(self, grace_s: float, boundary_wait_s: float = 10.0) -> None:
        """Let in-flight runs finish within ``grace_s``; then stop them at their next step
        boundary, and cancel those that do not reach one within ``boundary_wait_s``."""
        await self._wait_active(grace_s)
        if not self.active:
            return
        log.warning(
            "drain: %d run(s) still running after %.1f s; stopping them at their next checkpoint",
            len(self.active),
            grace_s,
        )
        for handle in list(self.active):
            handle.stop_requested = True
        await self._wait_active(boundary_wait_s)
        tasks = [h.task for h in list(self.active) if h.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    async def _wait_active(self, timeout_s: float) -> None:
        tasks = {h.task for h in self.active if h.task is not None}
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)
