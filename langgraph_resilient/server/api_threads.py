"""Routes of ``/threads``: records, state, history, copy, delete."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request
from langgraph.errors import InvalidUpdateError
from starlette.responses import Response

from langgraph_resilient.errors import LockTimeoutError
from langgraph_resilient.server import serde
from langgraph_resilient.server.context import ServerContext
from langgraph_resilient.server.errors import ApiError, json_response, not_found
from langgraph_resilient.server.graphs import ServedGraph
from langgraph_resilient.server.models import (
    CheckpointRef,
    Thread,
    ThreadCreate,
    ThreadHistoryQuery,
    ThreadPatch,
    ThreadSearch,
    ThreadState,
    ThreadStateUpdate,
    UpdateStateResponse,
)
from langgraph_resilient.server.state import empty_state, interrupt_json, thread_state
from langgraph_resilient.server.threads import ThreadExistsError, ThreadQuery, ThreadRecord

router = APIRouter(tags=["threads"])


# async: FastAPI runs a plain `def` dependency in its thread pool (a thread hop per request).
async def context(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.lgr
    return ctx


async def _record(ctx: ServerContext, thread_id: str) -> ThreadRecord:
    record = await ctx.threads.get(thread_id)
    if record is None:
        raise not_found(f"thread {thread_id!r}")
    return record


def _graph_of(ctx: ServerContext, record: ThreadRecord) -> ServedGraph | None:
    graph_id = record.metadata.get("graph_id")
    assert ctx.registry is not None
    return ctx.registry.find(graph_id) if isinstance(graph_id, str) else None


def _config(
    thread_id: str, ref: CheckpointRef | None = None, checkpoint_id: str | None = None
) -> Any:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if ref is not None:
        configurable["checkpoint_ns"] = ref.checkpoint_ns
        if ref.checkpoint_id:
            configurable["checkpoint_id"] = ref.checkpoint_id
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


@router.post("/threads", response_model=Thread)
async def create_thread(
    body: ThreadCreate | None = Body(default=None), ctx: ServerContext = Depends(context)
) -> Response:
    """Create a thread (``if_exists``: ``raise`` gives 409, ``do_nothing`` returns it)."""
    body = body or ThreadCreate()
    if body.supersteps:
        raise ApiError(422, "supersteps: not supported; create the thread, then update_state")
    thread_id = body.thread_id or str(uuid.uuid4())
    try:
        record = await ctx.threads.create(thread_id, body.metadata or {}, if_exists=body.if_exists)
    except ThreadExistsError as exc:
        raise ApiError(409, f"thread {thread_id!r} already exists") from exc
    return json_response(record.to_api())


@router.post("/threads/search", response_model=list[dict[str, Any]])  # `select` trims fields
async def search_threads(
    body: ThreadSearch | None = Body(default=None), ctx: ServerContext = Depends(context)
) -> Response:
    """Threads by metadata, values (JSON containment), status or ids; sorted and paged."""
    body = body or ThreadSearch()
    records = await ctx.threads.search(_query(body))
    rows = [r.to_api() for r in records]
    if body.select:
        rows = [{k: v for k, v in row.items() if k in body.select} for row in rows]
    return json_response(rows)


def _query(body: ThreadSearch) -> ThreadQuery:
    return ThreadQuery(
        metadata=body.metadata,
        values=body.values,
        status=body.status,
        ids=body.ids,
        limit=body.limit,
        offset=body.offset,
        sort_by=body.sort_by,
        sort_order=body.sort_order,
    )


@router.post("/threads/count", response_model=int)
async def count_threads(
    body: ThreadSearch | None = Body(default=None), ctx: ServerContext = Depends(context)
) -> Response:
    """How many threads match the filters of ``/threads/search``."""
    return json_response(await ctx.threads.count(_query(body or ThreadSearch())))


@router.get("/threads/{thread_id}", response_model=Thread)
async def get_thread(thread_id: str, ctx: ServerContext = Depends(context)) -> Response:
    """One thread."""
    return json_response((await _record(ctx, thread_id)).to_api())


@router.patch("/threads/{thread_id}", response_model=Thread)
async def patch_thread(
    thread_id: str, body: ThreadPatch, ctx: ServerContext = Depends(context)
) -> Response:
    """Merge metadata into a thread's (top-level keys are replaced)."""
    record = await ctx.threads.update_metadata(thread_id, body.metadata)
    if record is None:
        raise not_found(f"thread {thread_id!r}")
    return json_response(record.to_api())


@router.delete("/threads/{thread_id}", status_code=204)
async def delete_thread(thread_id: str, ctx: ServerContext = Depends(context)) -> Response:
    """Delete a thread and its checkpoints (409 while a run holds it)."""
    await _record(ctx, thread_id)
    assert ctx.saver is not None
    try:
        async with ctx.saver.lock_thread(thread_id, ttl_s=ctx.settings.lease_ttl_s, wait_s=0):
            await ctx.saver.adelete_thread(thread_id)
            await ctx.threads.delete(thread_id)
    except LockTimeoutError as exc:
        raise ApiError(409, f"thread {thread_id!r} is running: {exc}") from exc
    return Response(status_code=204)


@router.post("/threads/{thread_id}/copy", response_model=Thread)
async def copy_thread(thread_id: str, ctx: ServerContext = Depends(context)) -> Response:
    """A new thread with a copy of this thread's checkpoints and metadata."""
    await _record(ctx, thread_id)
    assert ctx.saver is not None
    target = str(uuid.uuid4())
    await ctx.saver.acopy_thread(thread_id, target)
    record = await ctx.threads.copy(thread_id, target)
    if record is None:
        raise not_found(f"thread {thread_id!r}")
    return json_response(record.to_api())


async def _state(ctx: ServerContext, thread_id: str, config: Any, subgraphs: bool) -> Response:
    record = await _record(ctx, thread_id)
    served = _graph_of(ctx, record)
    checkpoint_id = config["configurable"].get("checkpoint_id")
    assert ctx.saver is not None
    if checkpoint_id and await ctx.saver.aget_tuple(config) is None:
        raise not_found(f"checkpoint {checkpoint_id!r} of thread {thread_id!r}")
    if served is None:
        if checkpoint_id:
            raise not_found(f"checkpoint {checkpoint_id!r} of thread {thread_id!r}")
        return json_response(empty_state())
    snapshot = await served.graph.aget_state(config, subgraphs=subgraphs)
    return json_response(thread_state(snapshot))


@router.get("/threads/{thread_id}/state", response_model=ThreadState)
async def get_state(
    thread_id: str, subgraphs: bool = Query(default=False), ctx: ServerContext = Depends(context)
) -> Response:
    """The thread's current state (``values``, ``next``, ``tasks``, ``interrupts``, ...)."""
    return await _state(ctx, thread_id, _config(thread_id), subgraphs)


@router.get("/threads/{thread_id}/state/{checkpoint_id}", response_model=ThreadState)
async def get_state_at(
    thread_id: str,
    checkpoint_id: str,
    subgraphs: bool = Query(default=False),
    ctx: ServerContext = Depends(context),
) -> Response:
    """The thread's state at a checkpoint (404 when it is not one of this thread's)."""
    return await _state(ctx, thread_id, _config(thread_id, checkpoint_id=checkpoint_id), subgraphs)


@router.post("/threads/{thread_id}/state/checkpoint", response_model=ThreadState)
async def post_state_at(
    thread_id: str,
    checkpoint: CheckpointRef = Body(embed=True),
    subgraphs: bool = Body(default=False, embed=True),
    ctx: ServerContext = Depends(context),
) -> Response:
    """The thread's state at a checkpoint given as an object (with a namespace)."""
    return await _state(ctx, thread_id, _config(thread_id, checkpoint), subgraphs)


@router.post("/threads/{thread_id}/state", response_model=UpdateStateResponse)
async def update_state(
    thread_id: str, body: ThreadStateUpdate, ctx: ServerContext = Depends(context)
) -> Response:
    """``update_state``: write values as if ``as_node`` had returned them (409 while a run
    holds the thread)."""
    record = await _record(ctx, thread_id)
    served = _graph_of(ctx, record)
    if served is None:
        raise ApiError(
            409,
            f"thread {thread_id!r} has no graph yet: run it once (or set metadata.graph_id) "
            "before updating its state",
        )
    config = _config(thread_id, body.checkpoint, body.checkpoint_id)
    assert ctx.saver is not None
    checkpoint_id = config["configurable"].get("checkpoint_id")
    graph = served.graph
    if checkpoint_id:
        if await ctx.saver.aget_tuple(config) is None:
            raise not_found(f"checkpoint {checkpoint_id!r} of thread {thread_id!r}")
        head = await ctx.saver.aget_tuple(_config(thread_id))
        if head is None or head.config["configurable"]["checkpoint_id"] != checkpoint_id:
            graph = served.forking  # a new branch from an older checkpoint
    if body.as_node is not None and body.as_node not in served.graph.nodes:
        raise ApiError(422, f"as_node: unknown node {body.as_node!r}")
    try:
        async with ctx.saver.lock_thread(thread_id, ttl_s=ctx.settings.lease_ttl_s, wait_s=0):
            try:
                new_config = await graph.aupdate_state(config, body.values, as_node=body.as_node)
            except (InvalidUpdateError, ValueError, TypeError) as exc:
                raise ApiError(422, f"values: the graph refused the update: {exc}") from exc
            snapshot = await served.graph.aget_state({"configurable": {"thread_id": thread_id}})
            interrupts = {
                t.id: [interrupt_json(i) for i in t.interrupts]
                for t in snapshot.tasks
                if t.interrupts
            }
            status = "interrupted" if interrupts or snapshot.next else "idle"
            await ctx.threads.finish_run(
                thread_id,
                status,
                serde.dumps(snapshot.values).decode(),
                serde.dumps(interrupts).decode(),
            )
    except LockTimeoutError as exc:
        raise ApiError(409, f"thread {thread_id!r} is running: {exc}") from exc
    return json_response({"checkpoint": new_config["configurable"]})


async def _history(ctx: ServerContext, thread_id: str, body: ThreadHistoryQuery) -> Response:
    record = await _record(ctx, thread_id)
    served = _graph_of(ctx, record)
    if served is None:
        return json_response([])
    config = _config(thread_id, body.checkpoint)
    before = body.before
    before_id = before if isinstance(before, str) else before.checkpoint_id if before else None
    before_config: Any = _config(thread_id, checkpoint_id=before_id) if before_id else None
    states = [
        thread_state(s)
        async for s in served.graph.aget_state_history(
            config, filter=body.metadata, before=before_config, limit=body.limit
        )
    ]
    return json_response(states)


@router.get("/threads/{thread_id}/history", response_model=list[ThreadState])
async def get_history(
    thread_id: str,
    limit: int = Query(default=10, ge=1, le=1000),
    before: str | None = Query(default=None, max_length=256),
    ctx: ServerContext = Depends(context),
) -> Response:
    """The thread's past states, newest first."""
    return await _history(ctx, thread_id, ThreadHistoryQuery(limit=limit, before=before))


@router.post("/threads/{thread_id}/history", response_model=list[ThreadState])
async def post_history(
    thread_id: str,
    body: ThreadHistoryQuery | None = Body(default=None),
    ctx: ServerContext = Depends(context),
) -> Response:
    """The thread's past states, newest first, filtered by checkpoint metadata."""
    return await _history(ctx, thread_id, body or ThreadHistoryQuery())
