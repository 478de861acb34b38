"""The embedded durable tier, one SQLite file with no server: its schema and migrations.

One connection lives on one dedicated thread, so every statement runs in order and the event
loop never blocks on disk. WAL mode lets other processes read while this one writes; writes
from several processes wait for each other (``busy_timeout``). Each operation runs in one
transaction (``BEGIN IMMEDIATE`` for writes, so a retry never sees half of it). The schema and
every rule are the Postgres store's (``durable/postgres/``), written for SQLite.
"""

from __future__ import annotations

import sqlite3
import time

from langgraph_resilient.checkpoint.durable.schema import SCHEMA_VERSION, check_version
from langgraph_resilient.checkpoint.durable.sqlite.connection import SqliteConnection

# Schema, one entry per version, kept in step with the Postgres one. `{p}` is the prefix.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE {p}checkpoints (
        thread_id TEXT NOT NULL,
        checkpoint_ns TEXT NOT NULL DEFAULT '',
        checkpoint_id TEXT NOT NULL,
        parent_checkpoint_id TEXT,
        run_key TEXT,
        body_type TEXT NOT NULL,
        body BLOB NOT NULL,
        metadata_type TEXT NOT NULL,
        metadata BLOB NOT NULL,
        metadata_json TEXT,
        channel_versions TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
    ) WITHOUT ROWID;
    CREATE INDEX {p}checkpoints_run_key ON {p}checkpoints (run_key) WHERE run_key IS NOT NULL;
    CREATE TABLE {p}blobs (
        thread_id TEXT NOT NULL,
        checkpoint_ns TEXT NOT NULL DEFAULT '',
        channel TEXT NOT NULL,
        version TEXT NOT NULL,
        type TEXT NOT NULL,
        blob BLOB,
        PRIMARY KEY (thread_id, checkpoint_ns, channel, version)
    ) WITHOUT ROWID;
    CREATE TABLE {p}writes (
        thread_id TEXT NOT NULL,
        checkpoint_ns TEXT NOT NULL DEFAULT '',
        checkpoint_id TEXT NOT NULL,
        task_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        task_path TEXT NOT NULL DEFAULT '',
        channel TEXT NOT NULL,
        type TEXT NOT NULL,
        blob BLOB NOT NULL,
        PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
    ) WITHOUT ROWID;
    CREATE TABLE {p}threads (
        thread_id TEXT PRIMARY KEY,
        epoch INTEGER NOT NULL DEFAULT 0,
        lease_token TEXT,
        lease_expires_at REAL,
        updated_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE {p}heads (
        thread_id TEXT NOT NULL,
        checkpoint_ns TEXT NOT NULL,
        checkpoint_id TEXT NOT NULL,
        PRIMARY KEY (thread_id, checkpoint_ns)
    ) WITHOUT ROWID;
    CREATE TABLE {p}cache_dirty (
        thread_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
]

CREATE_SCHEMA_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS {p}schema (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL,
    applied_at REAL NOT NULL
)
"""
READ_VERSION_SQL = "SELECT version FROM {p}schema WHERE id = 1"
WRITE_VERSION_SQL = """
INSERT INTO {p}schema (id, version, applied_at) VALUES (1, ?, ?)
ON CONFLICT (id) DO UPDATE SET version = excluded.version, applied_at = excluded.applied_at
"""


class SqliteSchema(SqliteConnection):
    """Schema versions and migrations (in one immediate transaction)."""

    async def schema_version(self) -> int:
        def read(conn: sqlite3.Connection) -> int:
            try:
                row = conn.execute(self._sql(READ_VERSION_SQL)).fetchone()
            except sqlite3.OperationalError:
                return 0
            return int(row[0]) if row else 0

        return await self._run(read)

    async def migrate(self) -> int:
        def apply(conn: sqlite3.Connection) -> int:
            conn.execute(self._sql(CREATE_SCHEMA_TABLE_SQL))
            row = conn.execute(self._sql(READ_VERSION_SQL)).fetchone()
            current = int(row[0]) if row else 0
            if current > SCHEMA_VERSION:
                check_version(self.tier_name, current)
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in self._sql(MIGRATIONS[version - 1]).split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(self._sql(WRITE_VERSION_SQL), (version, time.time()))
            return SCHEMA_VERSION

        if await self.schema_version() == SCHEMA_VERSION:
            return SCHEMA_VERSION
        return await self._write(apply)
