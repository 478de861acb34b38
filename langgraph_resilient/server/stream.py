"""Stream chunks of ``graph.astream`` as LangGraph Server's server-sent events.

Event names are the stream mode (``values``, ``updates``, ``custom``, ``debug``, ...), with the
subgraph namespace appended (``updates|child:<task id>``) when ``stream_subgraphs`` is on.
``messages-tuple`` sends ``messages`` events holding ``[message chunk, metadata]``;
``messages`` sends LangGraph Server's ``messages/metadata``, ``messages/partial`` and
``messages/complete`` events, whose messages accumulate the chunks seen so far.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from langgraph_resilient.server import serde
from langgraph_resilient.server.state import checkpoint_of


def sse(event: str, data: Any) -> bytes:
    """One server-sent event."""
    return b"event: " + event.encode() + b"\ndata: " + serde.dumps(data) + b"\n\n"


def graph_modes(requested: Sequence[str]) -> list[str]:
    """The modes ``astream`` runs with: the requested ones, plus ``values`` and ``updates``
    (the run needs its last values and its interrupts whatever the client asked for)."""
    modes = {"values", "updates"}
    for mode in requested:
        modes.add("messages" if mode == "messages-tuple" else mode)
    return sorted(modes)


def _debug(chunk: Any) -> Any:
    # LangGraph Server adds `checkpoint`/`parent_checkpoint` to debug checkpoint payloads.
    if isinstance(chunk, dict) and chunk.get("type") == "checkpoint":
        payload = dict(chunk.get("payload") or {})
        payload["checkpoint"] = checkpoint_of(payload.get("config"))
        payload["parent_checkpoint"] = checkpoint_of(payload.get("parent_config"))
        return {**chunk, "payload": payload}
    return chunk


class EventMapper:
    """Turns ``astream`` items into ``(event, data)`` pairs for the requested modes."""

    def __init__(self, requested: Sequence[str], subgraphs: bool) -> None:
        self.requested = set(requested)
        self.subgraphs = subgraphs
        self._messages: dict[str, Any] = {}

    def _name(self, mode: str, ns: tuple[str, ...]) -> str:
        return f"{mode}|{'|'.join(ns)}" if self.subgraphs and ns else mode

    def events(self, ns: tuple[str, ...], mode: str, chunk: Any) -> Iterator[tuple[str, Any]]:
        if mode == "messages":
            if "messages-tuple" in self.requested:
                yield self._name("messages", ns), chunk
            if "messages" in self.requested:
                yield from self._accumulate(chunk)
            return
        if mode not in self.requested:
            return
        if mode == "debug":
            chunk = _debug(chunk)
        yield self._name(mode, ns), chunk

    def _accumulate(self, chunk: Any) -> Iterator[tuple[str, Any]]:
        from langchain_core.messages import BaseMessageChunk, message_chunk_to_message

        message, meta = chunk
        key = getattr(message, "id", None) or str(id(message))
        if key in self._messages and isinstance(message, BaseMessageChunk):
            self._messages[key] = self._messages[key] + message
        else:
            if key not in self._messages:
                yield "messages/metadata", {key: {"metadata": meta}}
            self._messages[key] = message
        current = self._messages[key]
        if isinstance(message, BaseMessageChunk):
            yield "messages/partial", [current]
        else:
            yield "messages/complete", [message_chunk_to_message(current)]
