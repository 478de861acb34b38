"""Choosing and migrating the thread-record store: Postgres when the saver has a
``postgres_url``, else the SQLite file (kept apart from ``threads.py``, which both stores
import)."""

from __future__ import annotations

from langgraph_resilient.checkpoint.settings import default_sqlite_path
from langgraph_resilient.server.threads import ThreadStore


def thread_store_for(postgres_url: str | None, sqlite_path: str | None, prefix: str) -> ThreadStore:
    """The thread-record store on the saver's database (Postgres, else the SQLite file)."""
    if postgres_url:
        from langgraph_resilient.server.threads_postgres import PostgresThreadStore

        return PostgresThreadStore(postgres_url, prefix=prefix)
    from langgraph_resilient.server.threads_sqlite import SqliteThreadStore

    return SqliteThreadStore(sqlite_path or default_sqlite_path(), prefix=prefix)


async def migrate_thread_store(
    postgres_url: str | None, sqlite_path: str | None, prefix: str
) -> str:
    """Apply the server tables' migrations (``langgraph-resilient migrate``); says what it did."""
    store = thread_store_for(postgres_url, sqlite_path, prefix)
    await store.open()
    try:
        before = await store.schema_version()
        after = await store.migrate()
    finally:
        await store.close()
    return f"server tables ({prefix}server_threads): schema version {before} -> {after}"
