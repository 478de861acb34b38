"""The Postgres durable tier, on an asyncpg pool: its schema and migrations.

Every hot-path operation is a single statement, so it is its own transaction and costs one
round trip once asyncpg has prepared it. Table names carry the saver's prefix (``{p}`` in the
statements); every primary key starts with ``thread_id`` so the tables shard by thread (Citus)
without redesign. Text keys use the "C" collation so that the database orders ids exactly as
Python does.
"""

from __future__ import annotations

import hashlib

import asyncpg

from langgraph_resilient.checkpoint.durable.postgres.connection import PostgresConnection
from langgraph_resilient.checkpoint.durable.schema import SCHEMA_VERSION, check_version
from langgraph_resilient.errors import SchemaVersionError

# Schema, one entry per version. `{p}` is the table prefix.
MIGRATIONS: list[str] = [
    # v1: checkpoints (values kept apart, per channel version), blobs, writes, thread epochs.
    """
    CREATE TABLE {p}checkpoints (
        thread_id text COLLATE "C" NOT NULL,
        checkpoint_ns text COLLATE "C" NOT NULL DEFAULT '',
        checkpoint_id text COLLATE "C" NOT NULL,
        parent_checkpoint_id text COLLATE "C",
        run_key text,
        body_type text NOT NULL,
        body bytea NOT NULL,
        metadata_type text NOT NULL,
        metadata bytea NOT NULL,
        metadata_json jsonb,
        channel_versions jsonb NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
    );
    CREATE INDEX {p}checkpoints_run_key ON {p}checkpoints (run_key) WHERE run_key IS NOT NULL;
    CREATE TABLE {p}blobs (
        thread_id text COLLATE "C" NOT NULL,
        checkpoint_ns text COLLATE "C" NOT NULL DEFAULT '',
        channel text COLLATE "C" NOT NULL,
        version text COLLATE "C" NOT NULL,
        type text NOT NULL,
        blob bytea,
        PRIMARY KEY (thread_id, checkpoint_ns, channel, version)
    );
    CREATE TABLE {p}writes (
        thread_id text COLLATE "C" NOT NULL,
        checkpoint_ns text COLLATE "C" NOT NULL DEFAULT '',
        checkpoint_id text COLLATE "C" NOT NULL,
        task_id text COLLATE "C" NOT NULL,
        idx integer NOT NULL,
        task_path text COLLATE "C" NOT NULL DEFAULT '',
        channel text NOT NULL,
        type text NOT NULL,
        blob bytea NOT NULL,
        PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
    );
    CREATE TABLE {p}threads (
        thread_id text COLLATE "C" PRIMARY KEY,
        epoch bigint NOT NULL DEFAULT 0,
        lease_token text,
        lease_expires_at timestamptz,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE {p}heads (
        thread_id text COLLATE "C" NOT NULL,
        checkpoint_ns text COLLATE "C" NOT NULL,
        checkpoint_id text COLLATE "C" NOT NULL,
        PRIMARY KEY (thread_id, checkpoint_ns)
    );
    CREATE TABLE {p}cache_dirty (
        thread_id text COLLATE "C" PRIMARY KEY,
        seq bigint GENERATED ALWAYS AS IDENTITY
    );
    """,
]

# The version table; one row. Created under the migration lock.
CREATE_SCHEMA_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS {p}schema (
    id integer PRIMARY KEY CHECK (id = 1),
    version integer NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
READ_VERSION_SQL = "SELECT version FROM {p}schema WHERE id = 1"
WRITE_VERSION_SQL = """
INSERT INTO {p}schema (id, version) VALUES (1, $1)
ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, applied_at = now()
"""
# Serializes migrations across replicas starting at once (released at commit).
MIGRATION_LOCK_SQL = "SELECT pg_advisory_xact_lock($1)"


class PostgresSchema(PostgresConnection):
    """Schema versions and migrations (under an advisory lock: replicas may start at once)."""

    async def schema_version(self) -> int:
        try:
            version = await self._pool().fetchval(self._sql(READ_VERSION_SQL))
        except asyncpg.exceptions.UndefinedTableError:
            return 0
        return int(version or 0)

    def _lock_key(self) -> int:
        digest = hashlib.blake2b(f"{self.prefix}:migrate".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)

    async def migrate(self) -> int:
        current = await self.schema_version()
        if current == SCHEMA_VERSION:
            return current
        if current > SCHEMA_VERSION:
            check_version(self.tier_name, current)
        async with self._pool().acquire() as conn, conn.transaction():
            await conn.execute(MIGRATION_LOCK_SQL, self._lock_key())
            await conn.execute(self._sql(CREATE_SCHEMA_TABLE_SQL))
            current = int(await conn.fetchval(self._sql(READ_VERSION_SQL)) or 0)
            if current > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{self.tier_name}: database schema {current} is newer than this release "
                    f"({SCHEMA_VERSION}); upgrade langgraph-resilient"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                await conn.execute(self._sql(MIGRATIONS[version - 1]))
                await conn.execute(self._sql(WRITE_VERSION_SQL), version)
        return SCHEMA_VERSION
