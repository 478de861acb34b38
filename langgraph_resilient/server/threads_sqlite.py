"""Thread records in the embedded SQLite file, next to the saver's tables.

One connection used from a worker thread (SQLite calls block), serialized by a lock; writes
are short transactions. JSON filters of ``/threads/search`` are applied in Python (exact
containment, like Postgres ``@>``): the embedded tier serves one machine's threads.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from langgraph_resilient.errors import SchemaVersionError, TierUnavailableError
from langgraph_resilient.server import metrics
from langgraph_resilient.server.threads import (
    SERVER_SCHEMA_VERSION,
    SORT_COLUMNS,
    ThreadExistsError,
    ThreadQuery,
    ThreadRecord,
    contains,
)

T = TypeVar("T")

# One entry per version; `{p}` is the table prefix. Times are ISO 8601 text in UTC.
MIGRATIONS: list[str] = [
    # v1: the thread records (see threads_postgres.py for the columns).
    """
    CREATE TABLE {p}server_threads (
        thread_id TEXT PRIMARY KEY,
        metadata TEXT NOT NULL DEFAULT '{{}}',
        status TEXT NOT NULL DEFAULT 'idle',
        values_json TEXT,
        interrupts TEXT NOT NULL DEFAULT '{{}}',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        last_run_at TEXT
    );
    CREATE INDEX {p}server_threads_created ON {p}server_threads (created_at);
    """,
]
# The server tables' version row.
CREATE_SCHEMA_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS {p}server_schema (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    applied_at TEXT NOT NULL
)
"""
READ_VERSION_SQL = "SELECT version FROM {p}server_schema WHERE id = 1"
WRITE_VERSION_SQL = """
INSERT INTO {p}server_schema (id, version, applied_at) VALUES (1, ?, ?)
ON CONFLICT (id) DO UPDATE SET version = excluded.version, applied_at = excluded.applied_at
"""
_COLUMNS = "thread_id, metadata, status, values_json, interrupts, created_at, updated_at"
# Create a record; nothing when it exists.
INSERT_SQL = (
    "INSERT INTO {p}server_threads (thread_id, metadata, created_at, updated_at) "
    "VALUES (?, ?, ?, ?) ON CONFLICT (thread_id) DO NOTHING"
)
GET_SQL = "SELECT " + _COLUMNS + " FROM {p}server_threads WHERE thread_id = ?"
# PATCH: top-level keys of the new metadata replace the old ones (json_patch merges objects).
UPDATE_METADATA_SQL = (
    "UPDATE {p}server_threads SET metadata = json_patch(metadata, ?), updated_at = ? "
    "WHERE thread_id = ?"
)
# A run took the thread's lease.
START_RUN_SQL = (
    "UPDATE {p}server_threads SET status = 'busy', metadata = json_patch(metadata, ?), "
    "updated_at = ?, last_run_at = ? WHERE thread_id = ?"
)
# The run ended: its outcome and a summary of the values.
FINISH_RUN_SQL = (
    "UPDATE {p}server_threads SET status = ?, values_json = ?, interrupts = ?, updated_at = ? "
    "WHERE thread_id = ?"
)
DELETE_SQL = "DELETE FROM {p}server_threads WHERE thread_id = ?"
COPY_SQL = (
    "INSERT INTO {p}server_threads (thread_id, metadata, status, values_json, interrupts, "
    "created_at, updated_at) SELECT ?, metadata, status, values_json, interrupts, ?, ? "
    "FROM {p}server_threads WHERE thread_id = ? ON CONFLICT (thread_id) DO NOTHING"
)
ACTIVE_SQL = "SELECT count(*) FROM {p}server_threads WHERE last_run_at > ?"
# Search: status and ids in SQL, JSON containment in Python, then sort and page.
SEARCH_SQL = "SELECT " + _COLUMNS + " FROM {p}server_threads WHERE true"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _record(row: Any) -> ThreadRecord:
    return ThreadRecord(
        thread_id=row[0],
        metadata=json.loads(row[1]),
        status=row[2],
        values=json.loads(row[3]) if row[3] is not None else None,
        interrupts=json.loads(row[4]),
        created_at=row[5],
        updated_at=row[6],
    )


def _merge_patch(metadata: Mapping[str, Any]) -> str:
    # json_patch deletes keys whose patch value is null; metadata keeps them as JSON null.
    return json.dumps({k: v for k, v in metadata.items() if v is not None})


class SqliteThreadStore:
    """Thread records in the embedded SQLite file."""

    tier_name = "sqlite"

    def __init__(self, path: str, *, prefix: str, busy_timeout_s: float = 30.0) -> None:
        self.path = path
        self.prefix = prefix
        self.busy_timeout_s = busy_timeout_s
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._busy = 0

    def _sql(self, template: str) -> str:
        return template.format(p=self.prefix)

    async def _run(self, query_type: str, call: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise TierUnavailableError(self.tier_name, "the thread store is closed")

        def work() -> T:
            with self._lock:
                self._busy = 1
                try:
                    with conn:  # one transaction, committed or rolled back
                        return call(conn)
                finally:
                    self._busy = 0

        with metrics.db_query(query_type):
            return await asyncio.to_thread(work)

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            return conn

        try:
            self._conn = await asyncio.to_thread(connect)
        except sqlite3.Error as exc:
            raise TierUnavailableError(self.tier_name, f"cannot open {self.path!r}: {exc}") from exc

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.to_thread(conn.close)

    async def schema_version(self) -> int:
        def read(conn: sqlite3.Connection) -> int:
            try:
                row = conn.execute(self._sql(READ_VERSION_SQL)).fetchone()
            except sqlite3.OperationalError:  # no version table yet
                return 0
            return int(row[0]) if row else 0

        return await self._run("schema_version", read)

    async def migrate(self) -> int:
        def migrate(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")  # the write lock: one migrating process at a time
            conn.execute(self._sql(CREATE_SCHEMA_TABLE_SQL))
            row = conn.execute(self._sql(READ_VERSION_SQL)).fetchone()
            current = int(row[0]) if row else 0
            if current > SERVER_SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"sqlite: the server tables are at version {current}, newer than this "
                    f"release ({SERVER_SCHEMA_VERSION}); upgrade langgraph-resilient"
                )
            for version in range(current + 1, SERVER_SCHEMA_VERSION + 1):
                for statement in self._sql(MIGRATIONS[version - 1]).split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(self._sql(WRITE_VERSION_SQL), (version, _now()))
            return SERVER_SCHEMA_VERSION

        conn = self._conn
        if conn is None:
            raise TierUnavailableError(self.tier_name, "the thread store is closed")
        # BEGIN IMMEDIATE needs autocommit control: run outside the `with conn` transaction.
        previous = conn.isolation_level

        def work() -> int:
            with self._lock:
                conn.isolation_level = None
                try:
                    version = migrate(conn)
                    conn.execute("COMMIT")
                    return version
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                finally:
                    conn.isolation_level = previous

        return await asyncio.to_thread(work)

    async def ping(self) -> None:
        await self._run("ping", lambda conn: conn.execute("SELECT 1").fetchone())

    async def create(
        self, thread_id: str, metadata: Mapping[str, Any], *, if_exists: str
    ) -> ThreadRecord:
        def create(conn: sqlite3.Connection) -> tuple[bool, Any]:
            now = _now()
            cursor = conn.execute(
                self._sql(INSERT_SQL), (thread_id, json.dumps(dict(metadata)), now, now)
            )
            row = conn.execute(self._sql(GET_SQL), (thread_id,)).fetchone()
            return cursor.rowcount == 1, row

        inserted, row = await self._run("thread_create", create)
        if not inserted and if_exists != "do_nothing":
            raise ThreadExistsError(thread_id)
        return _record(row)

    async def get(self, thread_id: str) -> ThreadRecord | None:
        row = await self._run(
            "thread_get", lambda conn: conn.execute(self._sql(GET_SQL), (thread_id,)).fetchone()
        )
        return _record(row) if row is not None else None

    async def update_metadata(
        self, thread_id: str, metadata: Mapping[str, Any]
    ) -> ThreadRecord | None:
        def update(conn: sqlite3.Connection) -> Any:
            conn.execute(
                self._sql(UPDATE_METADATA_SQL), (_merge_patch(metadata), _now(), thread_id)
            )
            return conn.execute(self._sql(GET_SQL), (thread_id,)).fetchone()

        row = await self._run("thread_update", update)
        return _record(row) if row is not None else None

    async def start_run(self, thread_id: str, metadata: Mapping[str, Any]) -> None:
        now = _now()
        await self._run(
            "thread_start_run",
            lambda conn: conn.execute(
                self._sql(START_RUN_SQL), (_merge_patch(metadata), now, now, thread_id)
            ),
        )

    async def finish_run(
        self, thread_id: str, status: str, values_json: str | None, interrupts_json: str
    ) -> None:
        await self._run(
            "thread_finish_run",
            lambda conn: conn.execute(
                self._sql(FINISH_RUN_SQL),
                (status, values_json, interrupts_json, _now(), thread_id),
            ),
        )

    async def delete(self, thread_id: str) -> bool:
        cursor = await self._run(
            "thread_delete", lambda conn: conn.execute(self._sql(DELETE_SQL), (thread_id,))
        )
        return bool(cursor.rowcount == 1)

    async def copy(self, source: str, target: str) -> ThreadRecord | None:
        def copy(conn: sqlite3.Connection) -> Any:
            now = _now()
            cursor = conn.execute(self._sql(COPY_SQL), (target, now, now, source))
            if cursor.rowcount != 1:
                return None
            return conn.execute(self._sql(GET_SQL), (target,)).fetchone()

        row = await self._run("thread_copy", copy)
        return _record(row) if row is not None else None

    async def _matching(self, query: ThreadQuery) -> list[ThreadRecord]:
        sql = self._sql(SEARCH_SQL)
        args: list[Any] = []
        if query.status:
            sql += " AND status = ?"
            args.append(query.status)
        if query.ids is not None:
            sql += f" AND thread_id IN ({', '.join('?' for _ in query.ids)})"
            args += list(query.ids)
        rows = await self._run("thread_search", lambda conn: conn.execute(sql, args).fetchall())
        records = [_record(row) for row in rows]
        return [
            r
            for r in records
            if (not query.metadata or contains(r.metadata, query.metadata))
            and (not query.values or contains(r.values, query.values))
        ]

    async def search(self, query: ThreadQuery) -> list[ThreadRecord]:
        records = await self._matching(query)
        column = query.sort_by if query.sort_by in SORT_COLUMNS else "created_at"
        records.sort(
            key=lambda r: (getattr(r, column), r.thread_id), reverse=query.sort_order != "asc"
        )
        return records[query.offset : query.offset + query.limit]

    async def count(self, query: ThreadQuery) -> int:
        return len(await self._matching(query))

    async def active_threads(self, window_s: float) -> int:
        since = datetime.fromtimestamp(datetime.now(UTC).timestamp() - window_s, UTC)
        row = await self._run(
            "thread_active",
            lambda conn: conn.execute(self._sql(ACTIVE_SQL), (since.isoformat(),)).fetchone(),
        )
        return int(row[0])

    def connections_in_use(self) -> int:
        return self._busy
