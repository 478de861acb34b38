"""Thread records on Postgres (asyncpg), in ``{prefix}server_threads`` next to the checkpoints.

The primary key is ``thread_id`` (the tables shard by thread like the saver's). The server's
tables have their own versioned migrations and version row (``{prefix}server_schema``), applied
under an advisory lock so that replicas starting at once migrate once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import asyncpg

from langgraph_resilient._urls import redact
from langgraph_resilient.errors import SchemaVersionError, TierUnavailableError
from langgraph_resilient.server import metrics
from langgraph_resilient.server.threads import (
    SERVER_SCHEMA_VERSION,
    SORT_COLUMNS,
    ThreadExistsError,
    ThreadQuery,
    ThreadRecord,
)

# One entry per version; `{p}` is the table prefix.
MIGRATIONS: list[str] = [
    # v1: the thread records. `values_json` is the JSON summary of the last run's values;
    # `last_run_at` feeds langgraph_active_users (threads with a run in the last 5 minutes).
    """
    CREATE TABLE {p}server_threads (
        thread_id text COLLATE "C" PRIMARY KEY,
        metadata jsonb NOT NULL DEFAULT '{{}}',
        status text NOT NULL DEFAULT 'idle',
        values_json jsonb,
        interrupts jsonb NOT NULL DEFAULT '{{}}',
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        last_run_at timestamptz
    );
    CREATE INDEX {p}server_threads_created ON {p}server_threads (created_at);
    CREATE INDEX {p}server_threads_last_run ON {p}server_threads (last_run_at)
        WHERE last_run_at IS NOT NULL;
    """,
]
# The server tables' version row, created under the migration lock.
CREATE_SCHEMA_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS {p}server_schema (
    id integer PRIMARY KEY CHECK (id = 1),
    version integer NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
READ_VERSION_SQL = "SELECT version FROM {p}server_schema WHERE id = 1"
WRITE_VERSION_SQL = """
INSERT INTO {p}server_schema (id, version) VALUES (1, $1)
ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, applied_at = now()
"""
# Serializes migrations of replicas starting at once (released at commit).
MIGRATION_LOCK_SQL = "SELECT pg_advisory_xact_lock($1)"

_COLUMNS = "thread_id, metadata, status, values_json, interrupts, created_at, updated_at"
# Create a record; nothing when it exists (the caller then reads it or refuses).
INSERT_SQL = (
    "INSERT INTO {p}server_threads (thread_id, metadata) VALUES ($1, $2::jsonb) "
    "ON CONFLICT (thread_id) DO NOTHING RETURNING " + _COLUMNS
)
GET_SQL = "SELECT " + _COLUMNS + " FROM {p}server_threads WHERE thread_id = $1"
# PATCH /threads/{id}: top-level keys of the new metadata replace the old ones.
UPDATE_METADATA_SQL = (
    "UPDATE {p}server_threads SET metadata = metadata || $2::jsonb, updated_at = now() "
    "WHERE thread_id = $1 RETURNING " + _COLUMNS
)
# A run took the thread's lease: busy, and the graph it runs on is remembered in metadata.
START_RUN_SQL = """
UPDATE {p}server_threads
SET status = 'busy', metadata = metadata || $2::jsonb, updated_at = now(), last_run_at = now()
WHERE thread_id = $1
"""
# The run ended (still under its lease): its outcome and a summary of the values.
FINISH_RUN_SQL = """
UPDATE {p}server_threads
SET status = $2, values_json = $3::jsonb, interrupts = $4::jsonb, updated_at = now()
WHERE thread_id = $1
"""
DELETE_SQL = "DELETE FROM {p}server_threads WHERE thread_id = $1"
# POST /threads/{id}/copy: the copy starts with the source's metadata, status and values.
COPY_SQL = (
    "INSERT INTO {p}server_threads (thread_id, metadata, status, values_json, interrupts) "
    "SELECT $2, metadata, status, values_json, interrupts FROM {p}server_threads "
    "WHERE thread_id = $1 ON CONFLICT (thread_id) DO NOTHING RETURNING " + _COLUMNS
)
# langgraph_active_users: threads with a run started within the window.
ACTIVE_SQL = (
    "SELECT count(*) FROM {p}server_threads WHERE last_run_at > now() - make_interval(secs => $1)"
)
# POST /threads/search and /threads/count: filters are appended as `AND ...` clauses.
SEARCH_SQL = "SELECT " + _COLUMNS + " FROM {p}server_threads WHERE true"
COUNT_SQL = "SELECT count(*) FROM {p}server_threads WHERE true"


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset hook that sends nothing.

    asyncpg's default reset sends ``RESET ALL``/``UNLISTEN *``/... each time a connection goes
    back to the pool: one more round trip per query, three per run. The store leaves no session
    state behind (no ``SET``, ``LISTEN``, cursors or session advisory locks: the migration lock
    is transaction-scoped), and asyncpg still rolls back a transaction left open.
    """


def _record(row: Any) -> ThreadRecord:
    values = row["values_json"]
    return ThreadRecord(
        thread_id=row["thread_id"],
        created_at=row["created_at"].isoformat(),
        updated_at=row["updated_at"].isoformat(),
        metadata=json.loads(row["metadata"]),
        status=row["status"],
        values=json.loads(values) if values is not None else None,
        interrupts=json.loads(row["interrupts"]),
    )


def _filters(query: ThreadQuery) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if query.metadata:
        args.append(json.dumps(query.metadata))
        clauses.append(f" AND metadata @> ${len(args)}::jsonb")
    if query.values:
        args.append(json.dumps(query.values))
        clauses.append(f" AND values_json @> ${len(args)}::jsonb")
    if query.status:
        args.append(query.status)
        clauses.append(f" AND status = ${len(args)}")
    if query.ids is not None:
        args.append(list(query.ids))
        clauses.append(f" AND thread_id = ANY(${len(args)}::text[])")
    return "".join(clauses), args


class PostgresThreadStore:
    """Thread records on Postgres, on a small asyncpg pool of their own."""

    tier_name = "postgres"

    def __init__(self, url: str, *, prefix: str, max_size: int = 4, timeout_s: float = 5.0):
        self.url = url
        self.prefix = prefix
        self.max_size = max_size
        self.timeout_s = timeout_s
        self.pool: asyncpg.Pool | None = None

    def _sql(self, template: str) -> str:
        return template.format(p=self.prefix)

    def _pool(self) -> asyncpg.Pool:
        if self.pool is None:
            raise TierUnavailableError(self.tier_name, "the thread store is closed")
        return self.pool

    async def open(self) -> None:
        try:
            self.pool = await asyncio.wait_for(
                asyncpg.create_pool(
                    dsn=self.url,
                    min_size=1,
                    max_size=self.max_size,
                    timeout=self.timeout_s,
                    command_timeout=30.0,
                    reset=_keep_session,
                ),
                timeout=self.timeout_s * 2,
            )
        except Exception as exc:
            raise TierUnavailableError(
                self.tier_name, f"cannot connect to {redact(self.url)}: {exc!r}"
            ) from exc

    async def close(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=self.timeout_s)
            except (TimeoutError, OSError):
                pool.terminate()

    async def schema_version(self) -> int:
        try:
            version = await self._pool().fetchval(self._sql(READ_VERSION_SQL))
        except asyncpg.exceptions.UndefinedTableError:
            return 0
        return int(version or 0)

    def _lock_key(self) -> int:
        digest = hashlib.blake2b(f"{self.prefix}:server-migrate".encode(), digest_size=8)
        return int.from_bytes(digest.digest(), "big", signed=True)

    async def migrate(self) -> int:
        if await self.schema_version() == SERVER_SCHEMA_VERSION:
            return SERVER_SCHEMA_VERSION
        async with self._pool().acquire() as conn, conn.transaction():
            await conn.execute(MIGRATION_LOCK_SQL, self._lock_key())
            await conn.execute(self._sql(CREATE_SCHEMA_TABLE_SQL))
            current = int(await conn.fetchval(self._sql(READ_VERSION_SQL)) or 0)
            if current > SERVER_SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"postgres: the server tables are at version {current}, newer than this "
                    f"release ({SERVER_SCHEMA_VERSION}); upgrade langgraph-resilient"
                )
            for version in range(current + 1, SERVER_SCHEMA_VERSION + 1):
                await conn.execute(self._sql(MIGRATIONS[version - 1]))
                await conn.execute(self._sql(WRITE_VERSION_SQL), version)
        return SERVER_SCHEMA_VERSION

    async def ping(self) -> None:
        await self._pool().fetchval("SELECT 1", timeout=self.timeout_s)

    async def create(
        self, thread_id: str, metadata: Mapping[str, Any], *, if_exists: str
    ) -> ThreadRecord:
        with metrics.db_query("thread_create"):
            row = await self._pool().fetchrow(
                self._sql(INSERT_SQL), thread_id, json.dumps(dict(metadata))
            )
        if row is not None:
            return _record(row)
        if if_exists != "do_nothing":
            raise ThreadExistsError(thread_id)
        existing = await self.get(thread_id)
        if existing is None:  # deleted in between: create it after all
            return await self.create(thread_id, metadata, if_exists=if_exists)
        return existing

    async def get(self, thread_id: str) -> ThreadRecord | None:
        with metrics.db_query("thread_get"):
            row = await self._pool().fetchrow(self._sql(GET_SQL), thread_id)
        return _record(row) if row is not None else None

    async def update_metadata(
        self, thread_id: str, metadata: Mapping[str, Any]
    ) -> ThreadRecord | None:
        with metrics.db_query("thread_update"):
            row = await self._pool().fetchrow(
                self._sql(UPDATE_METADATA_SQL), thread_id, json.dumps(dict(metadata))
            )
        return _record(row) if row is not None else None

    async def start_run(self, thread_id: str, metadata: Mapping[str, Any]) -> None:
        with metrics.db_query("thread_start_run"):
            await self._pool().execute(
                self._sql(START_RUN_SQL), thread_id, json.dumps(dict(metadata))
            )

    async def finish_run(
        self, thread_id: str, status: str, values_json: str | None, interrupts_json: str
    ) -> None:
        with metrics.db_query("thread_finish_run"):
            await self._pool().execute(
                self._sql(FINISH_RUN_SQL),
                thread_id,
                status,
                values_json,
                interrupts_json,
            )

    async def delete(self, thread_id: str) -> bool:
        with metrics.db_query("thread_delete"):
            result = await self._pool().execute(self._sql(DELETE_SQL), thread_id)
        return bool(result.endswith(" 1"))

    async def copy(self, source: str, target: str) -> ThreadRecord | None:
        with metrics.db_query("thread_copy"):
            row = await self._pool().fetchrow(self._sql(COPY_SQL), source, target)
        return _record(row) if row is not None else None

    async def search(self, query: ThreadQuery) -> list[ThreadRecord]:
        where, args = _filters(query)
        column = query.sort_by if query.sort_by in SORT_COLUMNS else "created_at"
        order = "ASC" if query.sort_order == "asc" else "DESC"
        args += [query.limit, query.offset]
        sql = (
            self._sql(SEARCH_SQL)
            + where
            + f" ORDER BY {column} {order}, thread_id {order} LIMIT ${len(args) - 1} "
            f"OFFSET ${len(args)}"
        )
        with metrics.db_query("thread_search"):
            rows = await self._pool().fetch(sql, *args)
        return [_record(row) for row in rows]

    async def count(self, query: ThreadQuery) -> int:
        where, args = _filters(query)
        with metrics.db_query("thread_count"):
            return int(await self._pool().fetchval(self._sql(COUNT_SQL) + where, *args))

    async def active_threads(self, window_s: float) -> int:
        with metrics.db_query("thread_active"):
            return int(await self._pool().fetchval(self._sql(ACTIVE_SQL), float(window_s)))

    def connections_in_use(self) -> int:
        pool = self.pool
        if pool is None:
            return 0
        return int(pool.get_size() - pool.get_idle_size())
