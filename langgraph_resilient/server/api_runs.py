"""Routes of runs: ``/threads/{id}/runs/{wait,stream}`` and stateless ``/runs/{wait,stream}``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from langgraph_resilient.server.context import ServerContext
from langgraph_resilient.server.errors import ApiError
from langgraph_resilient.server.models import RunCreate
from langgraph_resilient.server.run_response import StreamResponse, WaitResponse
from langgraph_resilient.server.runs import RunHandle, RunManager

router = APIRouter(tags=["runs"])


# async: FastAPI runs a plain `def` dependency in its thread pool (a thread hop per request).
async def _manager(request: Request) -> RunManager:
    ctx: ServerContext = request.app.state.lgr
    if ctx.draining:
        raise ApiError(
            503,
            "this replica is draining (shutting down): retry on another replica",
            headers={"Retry-After": str(ctx.settings.retry_after_s)},
        )
    assert ctx.runs is not None
    return ctx.runs


async def _start(
    manager: RunManager, body: RunCreate, thread_id: str | None, *, events: bool
) -> RunHandle:
    plan = await manager.plan(body, thread_id)
    return await manager.start(plan, events=events)


def _headers(handle: RunHandle) -> dict[str, str]:
    plan = handle.plan
    base = f"/threads/{plan.thread_id}/runs" if plan.thread_id else "/runs"
    return {"Content-Location": f"{base}/{plan.run_id}"}


@router.post("/threads/{thread_id}/runs/stream")
async def stream_thread_run(
    thread_id: str, body: RunCreate, manager: RunManager = Depends(_manager)
) -> Response:
    """Run the assistant on the thread and stream its events (server-sent events)."""
    handle = await _start(manager, body, thread_id, events=True)
    return StreamResponse(handle, _headers(handle))


@router.post("/threads/{thread_id}/runs/wait")
async def wait_thread_run(
    thread_id: str, body: RunCreate, manager: RunManager = Depends(_manager)
) -> Response:
    """Run the assistant on the thread and return its final values."""
    handle = await _start(manager, body, thread_id, events=False)
    return WaitResponse(handle, _headers(handle))


@router.post("/runs/stream")
async def stream_stateless_run(
    body: RunCreate, manager: RunManager = Depends(_manager)
) -> Response:
    """Run the assistant without a thread (nothing is stored) and stream its events."""
    handle = await _start(manager, body, None, events=True)
    return StreamResponse(handle, _headers(handle))


@router.post("/runs/wait")
async def wait_stateless_run(body: RunCreate, manager: RunManager = Depends(_manager)) -> Response:
    """Run the assistant without a thread (nothing is stored) and return its final values."""
    handle = await _start(manager, body, None, events=False)
    return WaitResponse(handle, _headers(handle))
