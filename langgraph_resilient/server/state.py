"""LangGraph ``StateSnapshot`` as LangGraph Server's ``ThreadState`` JSON."""

from __future__ import annotations

from typing import Any

from langgraph.types import StateSnapshot


def checkpoint_of(config: Any) -> dict[str, Any] | None:
    """The ``Checkpoint`` object (thread, namespace, id) of a checkpoint's config."""
    if not config:
        return None
    conf = config.get("configurable") or {}
    if not conf.get("thread_id") or not conf.get("checkpoint_id"):
        return None
    out: dict[str, Any] = {
        "thread_id": conf["thread_id"],
        "checkpoint_ns": conf.get("checkpoint_ns") or "",
        "checkpoint_id": conf["checkpoint_id"],
    }
    if "checkpoint_map" in conf:
        out["checkpoint_map"] = conf["checkpoint_map"]
    return out


def interrupt_json(interrupt: Any) -> dict[str, Any]:
    """An ``Interrupt`` as ``{"id", "value"}``."""
    if isinstance(interrupt, dict):
        return {"id": interrupt.get("id"), "value": interrupt.get("value")}
    return {"id": getattr(interrupt, "id", None), "value": getattr(interrupt, "value", None)}


def thread_state(snapshot: StateSnapshot) -> dict[str, Any]:
    """The API's ``ThreadState`` for a snapshot (subgraph states nested in their tasks)."""
    tasks = []
    for task in snapshot.tasks:
        nested = task.state
        tasks.append(
            {
                "id": task.id,
                "name": task.name,
                "path": list(task.path),
                "error": str(task.error) if task.error is not None else None,
                "interrupts": [interrupt_json(i) for i in task.interrupts],
                "checkpoint": nested.get("configurable") if isinstance(nested, dict) else None,
                "state": thread_state(nested) if isinstance(nested, StateSnapshot) else None,
                "result": getattr(task, "result", None),
            }
        )
    metadata = dict(snapshot.metadata) if snapshot.metadata is not None else None
    parent = snapshot.parent_config
    return {
        "values": snapshot.values,
        "next": list(snapshot.next),
        "tasks": tasks,
        "metadata": metadata,
        "created_at": snapshot.created_at,
        "checkpoint": checkpoint_of(snapshot.config),
        "parent_checkpoint": checkpoint_of(parent),
        "interrupts": [interrupt_json(i) for i in snapshot.interrupts],
        "checkpoint_id": (snapshot.config or {}).get("configurable", {}).get("checkpoint_id"),
        "parent_checkpoint_id": (parent or {}).get("configurable", {}).get("checkpoint_id"),
    }


def empty_state() -> dict[str, Any]:
    """The state of a thread that never ran."""
    return {
        "values": {},
        "next": [],
        "tasks": [],
        "metadata": None,
        "created_at": None,
        "checkpoint": None,
        "parent_checkpoint": None,
        "interrupts": [],
        "checkpoint_id": None,
        "parent_checkpoint_id": None,
    }
