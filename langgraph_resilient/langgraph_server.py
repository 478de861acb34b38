"""The checkpointer plug for the official LangGraph Server (``langgraph dev``/``up``).

In ``langgraph.json``::

    "checkpointer": {"backend": "custom",
                     "path": "langgraph_resilient.langgraph_server:checkpointer"}

Configured by ``LANGGRAPH_RESILIENT_POSTGRES_URL``, ``LANGGRAPH_RESILIENT_REDIS_URL``,
``LANGGRAPH_RESILIENT_SQLITE_PATH`` and ``LANGGRAPH_RESILIENT_PREFIX`` (with none, the embedded
SQLite default ``./langgraph_state.db``). LangGraph Server enters the factory once per worker
thread (each with its own event loop): every entry opens its own saver bound to the loop that
entered it, so the savers never share a connection or a loop, and all of them see the same
threads because they share the database (and Redis).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from langgraph_resilient.checkpoint import ResilientSaver


def saver_kwargs_from_env() -> dict[str, Any]:
    """``ResilientSaver.from_urls`` arguments from the ``LANGGRAPH_RESILIENT_*`` variables."""
    kwargs: dict[str, Any] = {"prefix": os.environ.get("LANGGRAPH_RESILIENT_PREFIX", "lgr_")}
    postgres = os.environ.get("LANGGRAPH_RESILIENT_POSTGRES_URL")
    if postgres:
        kwargs["postgres_url"] = postgres
        redis = os.environ.get("LANGGRAPH_RESILIENT_REDIS_URL")
        if redis:
            kwargs["redis_url"] = redis
    elif os.environ.get("LANGGRAPH_RESILIENT_SQLITE_PATH"):
        kwargs["sqlite_path"] = os.environ["LANGGRAPH_RESILIENT_SQLITE_PATH"]
    return kwargs


@asynccontextmanager
async def checkpointer() -> AsyncIterator[ResilientSaver]:
    """A ``ResilientSaver`` from the environment, open for as long as the server uses it."""
    async with ResilientSaver.from_urls(**saver_kwargs_from_env()) as saver:
        yield saver
