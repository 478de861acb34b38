"""Routes of ``/assistants``: each configured graph is one assistant (read-only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request
from starlette.responses import Response

from langgraph_resilient.server.context import ServerContext
from langgraph_resilient.server.errors import json_response, not_found
from langgraph_resilient.server.graphs import GraphRegistry, ServedGraph
from langgraph_resilient.server.models import Assistant, AssistantSearch, GraphSchemas
from langgraph_resilient.server.threads import contains

router = APIRouter(tags=["assistants"])


# async: FastAPI runs a plain `def` dependency in its thread pool (a thread hop per request).
async def registry(request: Request) -> GraphRegistry:
    ctx: ServerContext = request.app.state.lgr
    assert ctx.registry is not None
    return ctx.registry


def _find(graphs: GraphRegistry, assistant_id: str) -> ServedGraph:
    served = graphs.find(assistant_id)
    if served is None:
        raise not_found(f"assistant {assistant_id!r}")
    return served


def _matching(graphs: GraphRegistry, body: AssistantSearch) -> list[ServedGraph]:
    found = [
        s
        for s in graphs.graphs.values()
        if (body.graph_id is None or s.graph_id == body.graph_id)
        and (body.name is None or s.graph_id == body.name)
        and (not body.metadata or contains(s.assistant()["metadata"], body.metadata))
    ]
    key = body.sort_by or "created_at"
    found.sort(
        key=lambda s: (str(s.assistant()[key]), s.graph_id), reverse=body.sort_order == "desc"
    )
    return found


@router.post("/assistants/search", response_model=list[dict[str, Any]])  # `select` trims fields
async def search_assistants(
    body: AssistantSearch | None = Body(default=None), graphs: GraphRegistry = Depends(registry)
) -> Response:
    """The assistants (one per graph) matching ``graph_id``, ``name`` and ``metadata``."""
    body = body or AssistantSearch()
    found = _matching(graphs, body)[body.offset : body.offset + body.limit]
    rows = [s.assistant() for s in found]
    if body.select:
        rows = [{k: v for k, v in row.items() if k in body.select} for row in rows]
    return json_response(rows)


@router.post("/assistants/count", response_model=int)
async def count_assistants(
    body: AssistantSearch | None = Body(default=None), graphs: GraphRegistry = Depends(registry)
) -> Response:
    """How many assistants match."""
    return json_response(len(_matching(graphs, body or AssistantSearch())))


@router.get("/assistants/{assistant_id}", response_model=Assistant)
async def get_assistant(assistant_id: str, graphs: GraphRegistry = Depends(registry)) -> Response:
    """An assistant, by assistant id or graph name."""
    return json_response(_find(graphs, assistant_id).assistant())


@router.get("/assistants/{assistant_id}/graph")
async def get_assistant_graph(
    assistant_id: str,
    xray: bool | int = Query(default=False),
    graphs: GraphRegistry = Depends(registry),
) -> Response:
    """The assistant's graph: nodes and edges (``xray`` expands subgraphs)."""
    return json_response(_find(graphs, assistant_id).drawing(xray))


@router.get("/assistants/{assistant_id}/schemas", response_model=GraphSchemas)
async def get_assistant_schemas(
    assistant_id: str, graphs: GraphRegistry = Depends(registry)
) -> Response:
    """The graph's input, output, state, config and context JSON schemas."""
    return json_response(_find(graphs, assistant_id).schemas())
