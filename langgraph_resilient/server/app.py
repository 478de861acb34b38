"""``create_app``: the ASGI application (FastAPI) that serves graphs over LangGraph Server's API."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from langgraph_resilient.errors import ConfigurationError
from langgraph_resilient.server import errors, middleware
from langgraph_resilient.server.context import ServerContext
from langgraph_resilient.server.models import ErrorBody
from langgraph_resilient.server.settings import SETTINGS_ENV, ServerSettings

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (400, 401, 404, 405, 409, 413, 422, 500, 503)
}


def create_app(
    graphs: Mapping[str, Any] | None = None,
    *,
    settings: ServerSettings | None = None,
    handle_sigterm: bool = True,
    freeze_gc: bool = False,
    **options: Any,
) -> FastAPI:
    """The graph server as an ASGI app (run it with uvicorn, or mount it in your own app).

    Args:
        graphs: Graph name -> compiled graph, ``StateGraph``, factory, or a
            ``path/to/file.py:attr`` / ``package.module:attr`` string.
        settings: A complete :class:`ServerSettings` (instead of ``graphs`` and ``options``).
        handle_sigterm: Drain on SIGTERM before the server stops (unready at once, new runs
            503, in-flight runs get ``drain_grace_s``). Turn off if your program handles
            SIGTERM itself; call ``app.state.lgr.drain()`` then.
        freeze_gc: Once started, collect garbage and move every object alive (modules,
            graphs, pools) to the garbage collector's permanent generation (``gc.freeze()``),
            so that full collections scan only what requests allocate: they took ~150 ms each,
            and half of the server's collection time, under load. Process-wide: ``serve``
            turns it on; turn it on when the app is the process's only job.
        options: Any other :class:`ServerSettings` field (``postgres_url``, ``redis_url``,
            ``sqlite_path``, ``prefix``, ``api_keys``, ``max_body_bytes``, ``cors_origins``,
            ``drain_grace_s``, ``enqueue_wait_s``, ``lease_ttl_s``, ...).

    The app opens its saver and thread-record store in its lifespan: when you mount it in
    another app, enter ``app.router.lifespan_context(app)`` from your own lifespan.
    """
    if settings is None:
        if "api_keys" in options:
            options["api_keys"] = tuple(options["api_keys"])
        if "cors_origins" in options:
            options["cors_origins"] = tuple(options["cors_origins"])
        settings = ServerSettings(graphs=dict(graphs or {}), **options)
    elif graphs or options:
        raise ConfigurationError("pass either settings or graphs and options, not both")
    ctx = ServerContext(settings, handle_sigterm=handle_sigterm, freeze_gc=freeze_gc)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await ctx.start()
        try:
            yield
        finally:
            await ctx.stop()

    from langgraph_resilient import __version__
    from langgraph_resilient.server import api_assistants, api_meta, api_runs, api_threads

    app = FastAPI(
        title="langgraph-resilient server",
        version=__version__,
        description="LangGraph Server's API (the part langgraph-sdk uses) on a stateless, "
        "replica-safe server.",
        lifespan=lifespan,
        responses=_ERRORS,
    )
    app.state.lgr = ctx
    # Runs first: FastAPI tries the routes in order, and runs are what the server mostly serves.
    for router in (api_runs, api_assistants, api_threads, api_meta):
        app.include_router(router.router)
    app.add_exception_handler(RequestValidationError, errors.on_validation_error)
    app.add_exception_handler(errors.ApiError, errors.on_api_error)
    app.add_exception_handler(StarletteHTTPException, errors.on_http_error)
    app.add_exception_handler(Exception, errors.on_unexpected)
    # Outermost last: request context sees every response, auth before the body is read.
    app.add_middleware(middleware.BodyLimit, limit=settings.max_body_bytes)
    if settings.api_keys:
        app.add_middleware(middleware.ApiKeyAuth, keys=settings.api_keys)
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["x-request-id"],
        )
    app.add_middleware(middleware.RequestContext)
    middleware.json_access_logging()
    return app


def create_app_from_env() -> FastAPI:
    """The app of a ``serve`` worker: settings from ``LANGGRAPH_RESILIENT_SERVER_SETTINGS``."""
    text = os.environ.get(SETTINGS_ENV)
    if not text:
        raise ConfigurationError(f"{SETTINGS_ENV} is not set: start workers with `serve`")
    return create_app(settings=ServerSettings.from_json(text), freeze_gc=True)
