"""The stateless graph server: LangGraph Server's API on ``ResilientSaver``, safe to replicate.

``create_app(graphs, ...)`` builds the ASGI app; ``langgraph-resilient serve`` runs it under
uvicorn. Needs the ``server`` extra: ``pip install 'langgraph-resilient[server]'``.
Names are imported on first use, so the CLI can register ``serve`` without importing FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langgraph_resilient.server.app import create_app
    from langgraph_resilient.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from langgraph_resilient.server.app import create_app

        return create_app
    if name == "ServerSettings":
        from langgraph_resilient.server.settings import ServerSettings

        return ServerSettings
    raise AttributeError(name)
