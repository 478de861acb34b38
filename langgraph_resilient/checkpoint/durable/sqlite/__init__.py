"""The embedded durable tier (SQLite): ``SqliteStore``, one module per concern."""

from langgraph_resilient.checkpoint.durable.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
