"""Thread records: what ``/threads`` returns and searches, kept in the durable tier.

A record is the thread's id, metadata, status (``idle``, ``busy``, ``interrupted``, ``error``),
times, and a JSON summary of its last values and interrupts. It lives next to the checkpoints
(same database, same prefix), so every replica answers ``POST /threads/search`` the same way.
Status changes are written by the run that holds the thread's lease.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

ThreadStatus = Literal["idle", "busy", "interrupted", "error"]
THREAD_STATUSES: tuple[str, ...] = ("idle", "busy", "interrupted", "error")
SORT_COLUMNS: tuple[str, ...] = ("thread_id", "status", "created_at", "updated_at")

SERVER_SCHEMA_VERSION = 1
"""The version of the server's own tables (``{prefix}server_threads``) this release uses."""


class ThreadExistsError(Exception):
    """``POST /threads`` with an id that exists and ``if_exists="raise"``."""


@dataclass(frozen=True, slots=True)
class ThreadRecord:
    """One thread as the API shows it."""

    thread_id: str
    created_at: str
    updated_at: str
    metadata: dict[str, Any]
    status: str
    values: Any
    interrupts: dict[str, Any]

    def to_api(self) -> dict[str, Any]:
        """The ``Thread`` object of LangGraph Server's API."""
        return {
            "thread_id": self.thread_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "metadata": self.metadata,
            "status": self.status,
            "values": self.values if self.values is not None else {},
            "interrupts": self.interrupts,
        }


@dataclass(frozen=True, slots=True)
class ThreadQuery:
    """``POST /threads/search`` filters. ``metadata``/``values`` match by JSON containment."""

    metadata: Mapping[str, Any] | None = None
    values: Mapping[str, Any] | None = None
    status: str | None = None
    ids: Sequence[str] | None = None
    limit: int = 10
    offset: int = 0
    sort_by: str = "created_at"
    sort_order: str = "desc"


class ThreadStore(Protocol):
    """The thread records' storage. ``PostgresThreadStore`` and ``SqliteThreadStore``."""

    tier_name: str

    async def open(self) -> None:
        """Connect (raising ``TierUnavailableError``)."""

    async def close(self) -> None:
        """Release every connection."""

    async def migrate(self) -> int:
        """Apply the missing migrations under a lock; returns the version reached."""

    async def schema_version(self) -> int:
        """The version the tables are at (0 before the first migration)."""

    async def ping(self) -> None:
        """One round trip (readiness); raises when the database does not answer."""

    async def create(
        self, thread_id: str, metadata: Mapping[str, Any], *, if_exists: str
    ) -> ThreadRecord:
        """Insert a record; ``if_exists="do_nothing"`` returns an existing one unchanged,
        ``"raise"`` raises :class:`ThreadExistsError`."""

    async def get(self, thread_id: str) -> ThreadRecord | None:
        """The record, or None."""

    async def update_metadata(
        self, thread_id: str, metadata: Mapping[str, Any]
    ) -> ThreadRecord | None:
        """Merge ``metadata`` into the record's (top-level keys); None when missing."""

    async def start_run(self, thread_id: str, metadata: Mapping[str, Any]) -> None:
        """Mark the thread busy and merge ``metadata`` (its graph and assistant)."""

    async def finish_run(
        self, thread_id: str, status: str, values_json: str | None, interrupts_json: str
    ) -> None:
        """Store the outcome of a run: status, values summary and interrupts (JSON text)."""

    async def delete(self, thread_id: str) -> bool:
        """Delete the record; False when there was none."""

    async def copy(self, source: str, target: str) -> ThreadRecord | None:
        """A new record ``target`` with ``source``'s metadata, status and values."""

    async def search(self, query: ThreadQuery) -> list[ThreadRecord]:
        """Records matching ``query``, sorted and paged."""

    async def count(self, query: ThreadQuery) -> int:
        """How many records match ``query`` (ignoring paging)."""

    async def active_threads(self, window_s: float) -> int:
        """Threads with a run started within the last ``window_s`` seconds."""

    def connections_in_use(self) -> int:
        """Connections of this store currently checked out (a gauge)."""


def contains(document: Any, pattern: Any) -> bool:
    """JSON containment (Postgres ``@>``) for the SQLite store: every key of ``pattern`` is in
    ``document`` with a contained value; lists contain every element of the pattern's list."""
    if isinstance(pattern, Mapping):
        return isinstance(document, Mapping) and all(
            key in document and contains(document[key], value) for key, value in pattern.items()
        )
    if isinstance(pattern, list):
        return isinstance(document, list) and all(
            any(contains(item, wanted) for item in document) for wanted in pattern
        )
    return bool(document == pattern)
