"""The graphs a server serves: loading ``path:attr`` specs, and each graph as an assistant.

Every configured graph is one assistant whose id is derived from the graph name exactly as
LangGraph Server derives it (``uuid5`` in its namespace), so an SDK client that stored an
assistant id from LangGraph Server finds the same assistant here.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid5

from langgraph.graph import StateGraph
from langgraph.pregel import Pregel

from langgraph_resilient.errors import ConfigurationError

AnyGraph = Pregel[Any, Any, Any, Any]
"""A compiled graph of any state, context, input and output types."""

log = logging.getLogger("langgraph_resilient.server")

NAMESPACE_GRAPH = UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")
"""LangGraph Server's namespace for the assistant id of a graph (``uuid5(ns, graph_id)``)."""


def assistant_id_for(graph_id: str) -> str:
    """The assistant id LangGraph Server gives the default assistant of ``graph_id``."""
    return str(uuid5(NAMESPACE_GRAPH, graph_id))


def _load_attr(spec: str, base_dir: str) -> Any:
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ConfigurationError(f"{spec!r} is not path/to/file.py:attr or package.module:attr")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target)
        if not path.is_absolute():
            path = Path(base_dir) / path
        path = path.resolve()
        if not path.is_file():
            raise ConfigurationError(f"graph file {str(path)!r} (from {spec!r}) does not exist")
        module_name = f"langgraph_resilient_graph_{abs(hash(str(path)))}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise ConfigurationError(f"cannot load {str(path)!r} as a Python module")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        # The graph file's own directory goes first on sys.path, as with `langgraph dev`,
        # so it can import its sibling modules.
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ConfigurationError(f"cannot import {target!r} (from {spec!r}): {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ConfigurationError(f"{target!r} has no attribute {attr!r}") from exc


async def _resolve(name: str, value: Any) -> AnyGraph | StateGraph[Any]:
    if isinstance(value, Pregel | StateGraph):
        return value
    if callable(value):  # a factory: graph() or async graph()
        made = value()
        if asyncio.iscoroutine(made):
            made = await made
        if isinstance(made, Pregel | StateGraph):
            return made
        raise ConfigurationError(
            f"graph {name!r}: the factory returned {type(made).__name__}, not a graph"
        )
    raise ConfigurationError(
        f"graph {name!r} is a {type(value).__name__}: expected a compiled graph, a StateGraph "
        "or a function returning one"
    )


@dataclass
class ServedGraph:
    """One configured graph: compiled with the server's saver, and without one."""

    graph_id: str
    assistant_id: str
    graph: AnyGraph
    """Compiled with the server's checkpointer (thread runs, state, history)."""
    stateless: AnyGraph
    """The same graph without a checkpointer (``/runs/wait``, ``/runs/stream``)."""
    forking: AnyGraph
    """The same graph on the fork saver: runs and updates from a checkpoint that is not the
    thread's head (time travel). They hold the thread's lease, but their writes are not fenced:
    the saver refuses a fenced checkpoint whose parent is not the head."""
    created_at: str
    input_schema: dict[str, Any] | None = field(default=None)

    def assistant(self) -> dict[str, Any]:
        """The assistant record LangGraph Server returns for a graph's default assistant."""
        return {
            "assistant_id": self.assistant_id,
            "graph_id": self.graph_id,
            "config": {},
            "context": {},
            "metadata": {"created_by": "system"},
            "name": self.graph_id,
            "description": None,
            "version": 1,
            "created_at": self.created_at,
            "updated_at": self.created_at,
        }

    def schemas(self) -> dict[str, Any]:
        """Input, output, state, config and context JSON schemas (None where unavailable)."""
        return {
            "graph_id": self.graph_id,
            "input_schema": _try(self.graph.get_input_jsonschema),
            "output_schema": _try(self.graph.get_output_jsonschema),
            "state_schema": _try(lambda: _state_schema(self.graph)),
            "config_schema": _try(lambda: _configurable_schema(self.graph)),
            "context_schema": _try(self.graph.get_context_jsonschema),
        }

    def drawing(self, xray: bool | int) -> dict[str, Any]:
        """The graph's nodes and edges (``GET /assistants/{id}/graph``)."""
        drawable = self.graph.get_graph(xray=xray)
        return drawable.to_json()


def _try(make: Any) -> Any:
    try:
        return make()
    except Exception as exc:  # a graph whose types pydantic cannot describe
        log.debug("schema unavailable: %s", exc)
        return None


def _state_schema(graph: AnyGraph) -> dict[str, Any]:
    from pydantic import create_model

    fields: dict[str, Any] = {}
    for key in graph.stream_channels_list:
        update_type = getattr(graph.channels[key], "UpdateType", Any)
        try:
            create_model(key, value=(update_type, None)).model_json_schema()
            fields[key] = (update_type, None)
        except Exception:
            fields[key] = (Any, None)
    schema: dict[str, Any] = create_model(graph.get_name("State"), **fields).model_json_schema()
    return schema


def _configurable_schema(graph: AnyGraph) -> dict[str, Any] | None:
    model = graph.config_schema()
    fields = getattr(model, "model_fields", {})
    if "configurable" not in fields:
        return None
    inner = fields["configurable"].annotation
    schema = getattr(inner, "model_json_schema", None)
    return schema() if callable(schema) else None


class GraphRegistry:
    """The served graphs, found by graph name or assistant id."""

    def __init__(self, graphs: Mapping[str, ServedGraph]) -> None:
        self._by_key: dict[str, ServedGraph] = {}
        self.graphs = dict(graphs)
        for served in graphs.values():
            self._by_key[served.graph_id] = served
            self._by_key[served.assistant_id] = served

    def find(self, key: str) -> ServedGraph | None:
        """The graph whose assistant id or graph name is ``key``."""
        return self._by_key.get(key)

    @classmethod
    async def load(
        cls, specs: Mapping[str, Any], base_dir: str, checkpointer: Any, fork_checkpointer: Any
    ) -> GraphRegistry:
        """Import every graph of ``specs`` (``path:attr`` strings or graph objects) and
        compile it with ``checkpointer``."""
        created = datetime.fromtimestamp(time.time(), UTC).isoformat()
        served: dict[str, ServedGraph] = {}
        for name, spec in specs.items():
            loaded = _load_attr(spec, base_dir) if isinstance(spec, str) else spec
            value = await _resolve(name, loaded)
            if isinstance(value, StateGraph):
                graph: AnyGraph = value.compile(checkpointer=checkpointer, name=name)
                stateless: AnyGraph = value.compile(name=name)
                forking: AnyGraph = value.compile(checkpointer=fork_checkpointer, name=name)
            else:
                graph = value.copy(update={"checkpointer": checkpointer})
                stateless = value.copy(update={"checkpointer": None})
                forking = value.copy(update={"checkpointer": fork_checkpointer})
            served[name] = ServedGraph(
                graph_id=name,
                assistant_id=assistant_id_for(name),
                graph=graph,
                stateless=stateless,
                forking=forking,
                created_at=created,
                input_schema=_try(graph.get_input_jsonschema),
            )
        return cls(served)
