"""Probes, metrics and server info: ``/health``, ``/ready``, ``/ok``, ``/metrics``, ``/info``."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from starlette.responses import Response

from langgraph_resilient.server import metrics
from langgraph_resilient.server.context import ServerContext
from langgraph_resilient.server.errors import json_response
from langgraph_resilient.server.models import Health

router = APIRouter(tags=["meta"])
log = logging.getLogger("langgraph_resilient.server")

ACTIVE_WINDOW_S = 300.0
"""``langgraph_active_users`` counts threads with a run started within this window."""


@router.get("/health", response_model=Health)
async def health() -> Response:
    """Liveness: the process and its event loop answer. Checks no dependency."""
    return json_response({"status": "ok"})


@router.get("/ok")
async def ok() -> Response:
    """LangGraph Server's health path."""
    return json_response({"ok": True})


@router.get("/ready", response_model=Health, responses={503: {"model": Health}})
async def ready(request: Request) -> Response:
    """Readiness: the durable tier answers, the server's tables are migrated and the replica
    is not draining (503 otherwise). Redis down is ``degraded``, still ready: the saver works
    without it."""
    ctx: ServerContext = request.app.state.lgr
    is_ready, checks = await ctx.readiness()
    if not is_ready:
        status = "draining" if ctx.draining else "unready"
        return json_response({"status": status, "checks": checks}, 503)
    status = "degraded" if checks.get("redis") == "degraded" else "ok"
    return json_response({"status": status, "checks": checks})


@router.get("/metrics")
async def metrics_endpoint(request: Request) -> Response:
    """Prometheus metrics (every worker's, in multiprocess mode)."""
    ctx: ServerContext = request.app.state.lgr
    try:
        active = await asyncio.wait_for(ctx.threads.active_threads(ACTIVE_WINDOW_S), 2.0)
        metrics.ACTIVE_USERS.set(active)
    except Exception as exc:  # a scrape must not fail because the database is slow
        log.warning("metrics: counting active threads failed: %r", exc)
    metrics.DB_CONNECTIONS_ACTIVE.set(ctx.threads.connections_in_use())
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


@router.get("/info")
async def info() -> Response:
    """Server version and the optional features it offers."""
    from langgraph_resilient import __version__

    return json_response(
        {
            "version": __version__,
            "server": "langgraph-resilient",
            "flags": {"assistants": True, "crons": False, "langsmith": False},
        }
    )
