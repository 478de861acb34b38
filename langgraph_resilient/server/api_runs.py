"""Routes of runs: ``/threads/{id}/runs/{wait,stream}`` and stateless ``/runs/{wait,stream}``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from langgraph_resilient.server import serde
from langgraph_resilient.server.context import ServerContext
from langgraph_resilient.server.errors import ApiError
from langgraph_resilient.server.models import RunCreate
from langgraph_resilient.server.runs import RunHandle, RunManager
from langgraph_resilient.server.stream import sse

router = APIRouter(tags=["runs"])

_KEEPALIVE_S = 5.0
"""``/runs/wait`` sends a newline this often while the run goes on (JSON ignores it), as
LangGraph Server does, so proxies do not cut an idle connection."""


def _manager(request: Request) -> RunManager:
    ctx: ServerContext = request.app.state.lgr
    if ctx.draining:
        raise ApiError(
            503,
            "this replica is draining (shutting down): retry on another replica",
            headers={"Retry-After": str(ctx.settings.retry_after_s)},
        )
    assert ctx.runs is not None
    return ctx.runs


async def _start(manager: RunManager, body: RunCreate, thread_id: str | None) -> RunHandle:
    plan = await manager.plan(body, thread_id)
    return await manager.start(plan)


def _headers(handle: RunHandle) -> dict[str, str]:
    plan = handle.plan
    base = f"/threads/{plan.thread_id}/runs" if plan.thread_id else "/runs"
    return {"Content-Location": f"{base}/{plan.run_id}"}


def _stream(handle: RunHandle) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        finished = False
        try:
            async for event, data in handle.events():
                yield sse(event, data)
            finished = True
        finally:
            if not finished:  # the client went away (or the server is stopping)
                handle.detach(cancel=handle.plan.cancel_on_disconnect)

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={**_headers(handle), "Cache-Control": "no-store"},
    )


def _wait(handle: RunHandle) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        task = handle.task
        assert task is not None
        handle.detached = True  # nobody reads the events; the result is enough
        finished = False
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=_KEEPALIVE_S)
                if done:
                    break
                yield b"\n"
            with contextlib.suppress(asyncio.CancelledError):
                task.result()
            result: Any = handle.result
            if handle.status == "cancelled" and result is None:
                result = {"__error__": {"error": "CancelledError", "message": "run cancelled"}}
            finished = True
            yield serde.dumps(result if result is not None else {})
        finally:
            if not finished:
                handle.detach(cancel=handle.plan.cancel_on_disconnect)

    return StreamingResponse(body(), media_type="application/json", headers=_headers(handle))


@router.post("/threads/{thread_id}/runs/stream")
async def stream_thread_run(
    thread_id: str, body: RunCreate, manager: RunManager = Depends(_manager)
) -> Response:
    """Run the assistant on the thread and stream its events (server-sent events)."""
    return _stream(await _start(manager, body, thread_id))


@router.post("/threads/{thread_id}/runs/wait")
async def wait_thread_run(
    thread_id: str, body: RunCreate, manager: RunManager = Depends(_manager)
) -> Response:
    """Run the assistant on the thread and return its final values."""
    return _wait(await _start(manager, body, thread_id))


@router.post("/runs/stream")
async def stream_stateless_run(
    body: RunCreate, manager: RunManager = Depends(_manager)
) -> Response:
    """Run the assistant without a thread (nothing is stored) and stream its events."""
    return _stream(await _start(manager, body, None))


@router.post("/runs/wait")
async def wait_stateless_run(body: RunCreate, manager: RunManager = Depends(_manager)) -> Response:
    """Run the assistant without a thread (nothing is stored) and return its final values."""
    return _wait(await _start(manager, body, None))
