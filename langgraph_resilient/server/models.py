"""Request and response bodies of the HTTP API, as pydantic models (they make /openapi.json).

Field names, defaults and shapes follow LangGraph Server's API, which ``langgraph-sdk`` sends
and reads. Unknown fields are ignored, as newer SDKs may send more. Fields this server does not
implement are accepted only at their "off" value; anything else gets 422 saying so.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

StreamMode = Literal[
    "values", "updates", "messages", "messages-tuple", "custom", "debug", "tasks", "checkpoints"
]
"""Stream modes served. ``events`` (LangChain's astream_events) is not: see docs/server.md."""
MultitaskStrategy = Literal["reject", "enqueue", "interrupt", "rollback"]
ThreadStatusName = Literal["idle", "busy", "interrupted", "error"]

_ID = Field(min_length=1, max_length=256)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


# ---------------------------------------------------------------------------------- requests


class CheckpointRef(_Body):
    """A checkpoint of a thread (``checkpoint_ns`` defaults to the root graph)."""

    checkpoint_id: str | None = Field(default=None, max_length=256)
    checkpoint_ns: str = Field(default="", max_length=1024)
    thread_id: str | None = Field(default=None, max_length=256)
    checkpoint_map: dict[str, Any] | None = None


class RunCommand(_Body):
    """``Command`` for a run: ``resume`` answers an interrupt, ``update`` writes state,
    ``goto`` names the next node(s)."""

    update: dict[str, Any] | list[Any] | None = None
    resume: Any = None
    goto: str | dict[str, Any] | list[str | dict[str, Any]] | None = None


class RunConfig(_Body):
    """The run's ``RunnableConfig``: ``configurable`` keys reach the graph."""

    model_config = ConfigDict(extra="allow")
    tags: list[str] | None = None
    recursion_limit: int | None = Field(default=None, ge=1, le=100_000)
    configurable: dict[str, Any] | None = None


class RunCreate(_Body):
    """``POST /threads/{id}/runs/{wait,stream}`` and ``POST /runs/{wait,stream}``."""

    assistant_id: str = _ID
    input: dict[str, Any] | list[Any] | None = None
    command: RunCommand | None = None
    config: RunConfig | None = None
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    stream_mode: StreamMode | list[StreamMode] = "values"
    stream_subgraphs: bool = False
    stream_resumable: bool = False
    interrupt_before: Literal["*"] | list[str] | None = None
    interrupt_after: Literal["*"] | list[str] | None = None
    checkpoint_id: str | None = Field(default=None, max_length=256)
    checkpoint: CheckpointRef | None = None
    multitask_strategy: MultitaskStrategy = "enqueue"
    if_not_exists: Literal["create", "reject"] = "reject"
    on_disconnect: Literal["cancel", "continue"] | None = None
    on_completion: Literal["delete", "keep"] | None = None
    durability: Literal["sync", "async", "exit"] | None = None
    checkpoint_during: bool | None = None
    webhook: str | None = None
    after_seconds: float | None = None
    feedback_keys: list[str] | None = None


class ThreadCreate(_Body):
    """``POST /threads``."""

    thread_id: str | None = Field(default=None, min_length=1, max_length=256)
    metadata: dict[str, Any] | None = None
    if_exists: Literal["raise", "do_nothing"] = "raise"
    supersteps: list[Any] | None = None
    ttl: Any = None


class ThreadPatch(_Body):
    """``PATCH /threads/{id}``: top-level metadata keys are replaced."""

    metadata: dict[str, Any] = Field(default_factory=dict)
    ttl: Any = None


class ThreadSearch(_Body):
    """``POST /threads/search`` (and ``/threads/count``)."""

    metadata: dict[str, Any] | None = None
    values: dict[str, Any] | None = None
    ids: list[str] | None = Field(default=None, max_length=1000)
    status: ThreadStatusName | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)
    sort_by: Literal["thread_id", "status", "created_at", "updated_at"] = "created_at"
    sort_order: Literal["asc", "desc"] = "desc"
    select: list[str] | None = None
    extract: dict[str, str] | None = None


class ThreadStateUpdate(_Body):
    """``POST /threads/{id}/state``: ``update_state`` (as ``as_node`` if given)."""

    values: dict[str, Any] | list[Any] | None = None
    as_node: str | None = Field(default=None, max_length=256)
    checkpoint_id: str | None = Field(default=None, max_length=256)
    checkpoint: CheckpointRef | None = None


class ThreadHistoryQuery(_Body):
    """``POST /threads/{id}/history``."""

    limit: int = Field(default=10, ge=1, le=1000)
    before: str | CheckpointRef | None = None
    metadata: dict[str, Any] | None = None
    checkpoint: CheckpointRef | None = None


class AssistantSearch(_Body):
    """``POST /assistants/search``."""

    graph_id: str | None = None
    name: str | None = None
    metadata: dict[str, Any] | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)
    sort_by: Literal["assistant_id", "graph_id", "name", "created_at", "updated_at"] | None = None
    sort_order: Literal["asc", "desc"] | None = None
    select: list[str] | None = None


# --------------------------------------------------------------------------------- responses


class ErrorBody(BaseModel):
    """Every error: what is wrong, and for 422 each refused field."""

    detail: str
    errors: list[dict[str, Any]] | None = None


class Assistant(BaseModel):
    assistant_id: str
    graph_id: str
    config: dict[str, Any]
    context: dict[str, Any]
    metadata: dict[str, Any]
    name: str
    description: str | None
    version: int
    created_at: str
    updated_at: str


class GraphSchemas(BaseModel):
    graph_id: str
    input_schema: dict[str, Any] | None
    output_schema: dict[str, Any] | None
    state_schema: dict[str, Any] | None
    config_schema: dict[str, Any] | None
    context_schema: dict[str, Any] | None


class Thread(BaseModel):
    thread_id: str
    created_at: str
    updated_at: str
    metadata: dict[str, Any]
    status: ThreadStatusName
    values: Any
    interrupts: dict[str, Any]


class Checkpoint(BaseModel):
    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str | None
    checkpoint_map: dict[str, Any] | None = None


class ThreadState(BaseModel):
    values: Any
    next: list[str]
    tasks: list[dict[str, Any]]
    metadata: dict[str, Any] | None
    created_at: str | None
    checkpoint: Checkpoint | None
    parent_checkpoint: Checkpoint | None
    interrupts: list[dict[str, Any]]
    checkpoint_id: str | None = None
    parent_checkpoint_id: str | None = None


class UpdateStateResponse(BaseModel):
    checkpoint: dict[str, Any]


class Health(BaseModel):
    status: str
    checks: dict[str, Any] | None = None
