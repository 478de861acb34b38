"""The Postgres durable tier, on an asyncpg pool:
Deletes, copies, prunes, dirty marks and retention.

Every hot-path operation is a single statement, so it is its own transaction and costs one
round trip once asyncpg has prepared it. Table names carry the saver's prefix (``{p}`` in the
statements); every primary key starts with ``thread_id`` so the tables shard by thread (Citus)
without redesign. Text keys use the "C" collation so that the database orders ids exactly as
Python does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from langgraph_resilient.checkpoint.durable.postgres.connection import PostgresConnection
from langgraph_resilient.checkpoint.durable.store import Skeleton

# All of a thread, in one statement. Its epoch stays: a superseded lease must not write into a
# thread that is recreated under the same id.
DELETE_THREAD_SQL = """
WITH w AS (DELETE FROM {p}writes WHERE thread_id = $1),
     b AS (DELETE FROM {p}blobs WHERE thread_id = $1),
     h AS (DELETE FROM {p}heads WHERE thread_id = $1)
DELETE FROM {p}checkpoints WHERE thread_id = $1
"""

# Checkpoints of the given runs and their writes. Blobs they alone used stay until the thread is
# pruned or deleted: collecting them here could race a concurrent put that reuses a version.
# A deleted head forgets the namespace's `heads` row; the next fenced put starts it afresh.
DELETE_FOR_RUNS_SQL = """
WITH gone AS (
    DELETE FROM {p}checkpoints WHERE run_key = ANY($1::text[])
    RETURNING thread_id, checkpoint_ns, checkpoint_id
), w AS (
    DELETE FROM {p}writes wr USING gone
    WHERE wr.thread_id = gone.thread_id AND wr.checkpoint_ns = gone.checkpoint_ns
        AND wr.checkpoint_id = gone.checkpoint_id
), h AS (
    DELETE FROM {p}heads hd USING gone
    WHERE hd.thread_id = gone.thread_id AND hd.checkpoint_ns = gone.checkpoint_ns
        AND hd.checkpoint_id = gone.checkpoint_id
)
SELECT DISTINCT thread_id FROM gone
"""

# Every row of $1 copied under thread $2, in one statement.
COPY_THREAD_SQL = """
WITH c AS (
    INSERT INTO {p}checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
        run_key, body_type, body, metadata_type, metadata, metadata_json, channel_versions,
        created_at)
    SELECT $2, checkpoint_ns, checkpoint_id, parent_checkpoint_id, run_key, body_type, body,
        metadata_type, metadata, metadata_json, channel_versions, created_at
    FROM {p}checkpoints WHERE thread_id = $1
    ON CONFLICT DO NOTHING
), b AS (
    INSERT INTO {p}blobs (thread_id, checkpoint_ns, channel, version, type, blob)
    SELECT $2, checkpoint_ns, channel, version, type, blob FROM {p}blobs WHERE thread_id = $1
    ON CONFLICT DO NOTHING
)
INSERT INTO {p}writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, task_path,
    channel, type, blob)
SELECT $2, checkpoint_ns, checkpoint_id, task_id, idx, task_path, channel, type, blob
FROM {p}writes WHERE thread_id = $1
ON CONFLICT DO NOTHING
"""

# Prune planning: a thread's checkpoints without values, and which versions hold a value.
SKELETONS_SQL = """
SELECT checkpoint_ns, checkpoint_id, parent_checkpoint_id, metadata_type, metadata,
    channel_versions::text AS channel_versions
FROM {p}checkpoints WHERE thread_id = $1
"""
SEEDED_VERSIONS_SQL = """
SELECT checkpoint_ns, channel, version FROM {p}blobs
WHERE thread_id = $1 AND channel = ANY($2::text[]) AND blob IS NOT NULL
"""
# Prune execution, per namespace, in one transaction: the doomed checkpoints' writes, the
# checkpoints, parent links into them, then blobs no remaining checkpoint references.
PRUNE_WRITES_SQL = """
DELETE FROM {p}writes
WHERE thread_id = $1 AND checkpoint_ns = $2 AND checkpoint_id = ANY($3::text[])
"""
PRUNE_CHECKPOINTS_SQL = """
DELETE FROM {p}checkpoints
WHERE thread_id = $1 AND checkpoint_ns = $2 AND checkpoint_id = ANY($3::text[])
"""
PRUNE_PARENTS_SQL = """
UPDATE {p}checkpoints SET parent_checkpoint_id = NULL
WHERE thread_id = $1 AND checkpoint_ns = $2 AND parent_checkpoint_id = ANY($3::text[])
"""
PRUNE_BLOBS_SQL = """
DELETE FROM {p}blobs bl
WHERE bl.thread_id = $1 AND bl.checkpoint_ns = $2 AND NOT EXISTS (
    SELECT 1 FROM {p}checkpoints c
    WHERE c.thread_id = $1 AND c.checkpoint_ns = $2
        AND c.channel_versions ->> bl.channel = bl.version
)
"""

# Threads written while Redis was unreachable: their cached entries may be stale until a
# replica bumps their cache generation. A new mark takes a new seq, so clearing what a repair
# read never erases a mark made after it.
MARK_DIRTY_SQL = """
INSERT INTO {p}cache_dirty AS d (thread_id) SELECT unnest($1::text[])
ON CONFLICT (thread_id) DO UPDATE SET seq = DEFAULT
"""
DIRTY_THREADS_SQL = "SELECT thread_id, seq FROM {p}cache_dirty ORDER BY seq LIMIT $1"
CLEAR_DIRTY_SQL = """
DELETE FROM {p}cache_dirty d USING unnest($1::text[], $2::bigint[]) AS r(thread_id, seq)
WHERE d.thread_id = r.thread_id AND d.seq <= r.seq
"""

# Retention: threads whose newest checkpoint is older than a cutoff.
# Retention, one bounded batch at a time: threads after $2 (in id order, so the walk goes
# through the primary key index) whose newest checkpoint is older than the cutoff $1.
STALE_THREADS_SQL = """
SELECT thread_id FROM {p}checkpoints
WHERE thread_id > $2
GROUP BY thread_id HAVING max(created_at) < to_timestamp($1)
ORDER BY thread_id LIMIT $3
"""


class PostgresMaintenance(PostgresConnection):
    """History-changing operations, the Redis tier's dirty marks and retention."""

    async def delete_thread(self, thread_id: str) -> None:
        await self._pool().execute(self._sql(DELETE_THREAD_SQL), thread_id)

    async def delete_for_runs(self, run_keys: Sequence[str]) -> list[str]:
        rows = await self._pool().fetch(self._sql(DELETE_FOR_RUNS_SQL), list(run_keys))
        return [r["thread_id"] for r in rows]

    async def copy_thread(self, source: str, target: str) -> None:
        await self._pool().execute(self._sql(COPY_THREAD_SQL), source, target)

    async def skeletons(self, thread_id: str) -> list[Skeleton]:
        rows = await self._pool().fetch(self._sql(SKELETONS_SQL), thread_id)
        return [
            Skeleton(
                r["checkpoint_ns"],
                r["checkpoint_id"],
                r["parent_checkpoint_id"],
                (r["metadata_type"], r["metadata"]),
                json.loads(r["channel_versions"]),
            )
            for r in rows
        ]

    async def seeded_versions(
        self, thread_id: str, channels: Sequence[str]
    ) -> set[tuple[str, str, str]]:
        rows = await self._pool().fetch(self._sql(SEEDED_VERSIONS_SQL), thread_id, list(channels))
        return {(r["checkpoint_ns"], r["channel"], r["version"]) for r in rows}

    async def delete_checkpoints(self, thread_id: str, doomed: dict[str, list[str]]) -> None:
        async with self._pool().acquire() as conn, conn.transaction():
            for ns, ids in doomed.items():
                for template in (
                    PRUNE_WRITES_SQL,
                    PRUNE_CHECKPOINTS_SQL,
                    PRUNE_PARENTS_SQL,
                ):
                    await conn.execute(self._sql(template), thread_id, ns, ids)
                await conn.execute(self._sql(PRUNE_BLOBS_SQL), thread_id, ns)

    async def mark_dirty(self, thread_ids: Sequence[str]) -> None:
        await self._pool().execute(self._sql(MARK_DIRTY_SQL), list(thread_ids))

    async def dirty_threads(self, limit: int) -> list[tuple[str, int]]:
        rows = await self._pool().fetch(self._sql(DIRTY_THREADS_SQL), limit)
        return [(r["thread_id"], r["seq"]) for r in rows]

    async def clear_dirty(self, entries: Sequence[tuple[str, int]]) -> None:
        await self._pool().execute(
            self._sql(CLEAR_DIRTY_SQL), [t for t, _ in entries], [q for _, q in entries]
        )

    async def threads_older_than(self, cutoff_epoch_s: float, after: str, limit: int) -> list[str]:
        rows = await self._pool().fetch(self._sql(STALE_THREADS_SQL), cutoff_epoch_s, after, limit)
        return [r["thread_id"] for r in rows]
