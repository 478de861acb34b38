"""The embedded durable tier, one SQLite file with no server:
Deletes, copies, prunes, dirty marks and retention.

One connection lives on one dedicated thread, so every statement runs in order and the event
loop never blocks on disk. WAL mode lets other processes read while this one writes; writes
from several processes wait for each other (``busy_timeout``). Each operation runs in one
transaction (``BEGIN IMMEDIATE`` for writes, so a retry never sees half of it). The schema and
every rule are the Postgres store's (``durable/postgres/``), written for SQLite.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from langgraph_resilient.checkpoint.durable.sqlite.connection import SqliteConnection
from langgraph_resilient.checkpoint.durable.store import Skeleton

# A thread's rows; its epoch stays, as on Postgres.
DELETE_THREAD_SQL = (
    "DELETE FROM {p}heads WHERE thread_id = ?",
    "DELETE FROM {p}writes WHERE thread_id = ?",
    "DELETE FROM {p}blobs WHERE thread_id = ?",
    "DELETE FROM {p}checkpoints WHERE thread_id = ?",
)
# Checkpoints of the given runs and their writes (blobs stay until prune/delete, as on Postgres).
RUN_CHECKPOINTS_SQL = """
SELECT thread_id, checkpoint_ns, checkpoint_id FROM {p}checkpoints WHERE run_key = ?
"""
DELETE_CHECKPOINT_SQL = """
DELETE FROM {p}checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?
"""
DELETE_CHECKPOINT_WRITES_SQL = """
DELETE FROM {p}writes WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?
"""
FORGET_HEAD_SQL = """
DELETE FROM {p}heads WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?
"""
COPY_THREAD_SQL = (
    """INSERT INTO {p}checkpoints (thread_id, checkpoint_ns, checkpoint_id,
        parent_checkpoint_id, run_key, body_type, body, metadata_type, metadata, metadata_json,
        channel_versions, created_at)
    SELECT ?2, checkpoint_ns, checkpoint_id, parent_checkpoint_id, run_key, body_type, body,
        metadata_type, metadata, metadata_json, channel_versions, created_at
    FROM {p}checkpoints WHERE thread_id = ?1 ON CONFLICT DO NOTHING""",
    """INSERT INTO {p}blobs (thread_id, checkpoint_ns, channel, version, type, blob)
    SELECT ?2, checkpoint_ns, channel, version, type, blob FROM {p}blobs WHERE thread_id = ?1
    ON CONFLICT DO NOTHING""",
    """INSERT INTO {p}writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, task_path,
        channel, type, blob)
    SELECT ?2, checkpoint_ns, checkpoint_id, task_id, idx, task_path, channel, type, blob
    FROM {p}writes WHERE thread_id = ?1 ON CONFLICT DO NOTHING""",
)
SKELETONS_SQL = """
SELECT checkpoint_ns, checkpoint_id, parent_checkpoint_id, metadata_type, metadata,
    channel_versions FROM {p}checkpoints WHERE thread_id = ?
"""
SEEDED_VERSIONS_SQL = """
SELECT checkpoint_ns, channel, version FROM {p}blobs
WHERE thread_id = ? AND blob IS NOT NULL
    AND channel IN (SELECT value FROM json_each(?))
"""
PRUNE_PARENTS_SQL = """
UPDATE {p}checkpoints SET parent_checkpoint_id = NULL
WHERE thread_id = ? AND checkpoint_ns = ? AND parent_checkpoint_id = ?
"""
# Blobs of a namespace that no remaining checkpoint references.
PRUNE_BLOBS_SQL = """
DELETE FROM {p}blobs
WHERE thread_id = ?1 AND checkpoint_ns = ?2 AND NOT EXISTS (
    SELECT 1 FROM {p}checkpoints c, json_each(c.channel_versions) AS v
    WHERE c.thread_id = ?1 AND c.checkpoint_ns = ?2
        AND v.key = {p}blobs.channel AND v.value = {p}blobs.version
)
"""
# Threads written while Redis was unreachable (see the Postgres store): a new mark takes a new
# seq, so clearing what a repair read never erases a later mark.
MARK_DIRTY_SQL = """
INSERT INTO {p}cache_dirty (thread_id, seq)
VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM {p}cache_dirty))
ON CONFLICT (thread_id) DO UPDATE SET seq = excluded.seq
"""
DIRTY_THREADS_SQL = "SELECT thread_id, seq FROM {p}cache_dirty ORDER BY seq LIMIT ?"
CLEAR_DIRTY_SQL = "DELETE FROM {p}cache_dirty WHERE thread_id = ? AND seq <= ?"
# Retention, one bounded batch at a time (see the Postgres store).
STALE_THREADS_SQL = """
SELECT thread_id FROM {p}checkpoints WHERE thread_id > ?2
GROUP BY thread_id HAVING max(created_at) < ?1 ORDER BY thread_id LIMIT ?3
"""


class SqliteMaintenance(SqliteConnection):
    """History-changing operations, the Redis tier's dirty marks and retention."""

    async def delete_thread(self, thread_id: str) -> None:
        statements = [self._sql(s) for s in DELETE_THREAD_SQL]

        def delete(conn: sqlite3.Connection) -> None:
            for sql in statements:
                conn.execute(sql, (thread_id,))

        await self._write(delete)

    async def delete_for_runs(self, run_keys: Sequence[str]) -> list[str]:
        find = self._sql(RUN_CHECKPOINTS_SQL)
        drop_writes = self._sql(DELETE_CHECKPOINT_WRITES_SQL)
        drop = self._sql(DELETE_CHECKPOINT_SQL)
        forget_head = self._sql(FORGET_HEAD_SQL)

        def delete(conn: sqlite3.Connection) -> list[str]:
            threads: set[str] = set()
            for key in run_keys:
                for row in conn.execute(find, (key,)).fetchall():
                    conn.execute(forget_head, row)
                    conn.execute(drop_writes, row)
                    conn.execute(drop, row)
                    threads.add(row[0])
            return sorted(threads)

        return await self._write(delete)

    async def copy_thread(self, source: str, target: str) -> None:
        statements = [self._sql(s) for s in COPY_THREAD_SQL]

        def copy(conn: sqlite3.Connection) -> None:
            for sql in statements:
                conn.execute(sql, (source, target))

        await self._write(copy)

    async def skeletons(self, thread_id: str) -> list[Skeleton]:
        sql = self._sql(SKELETONS_SQL)

        def read(conn: sqlite3.Connection) -> list[Skeleton]:
            return [
                Skeleton(ns, cid, parent, (mtype, meta), json.loads(versions))
                for ns, cid, parent, mtype, meta, versions in conn.execute(
                    sql, (thread_id,)
                ).fetchall()
            ]

        return await self._read(read)

    async def seeded_versions(
        self, thread_id: str, channels: Sequence[str]
    ) -> set[tuple[str, str, str]]:
        sql = self._sql(SEEDED_VERSIONS_SQL)
        chans = json.dumps(list(channels))

        def read(conn: sqlite3.Connection) -> set[tuple[str, str, str]]:
            return {
                (ns, ch, ver) for ns, ch, ver in conn.execute(sql, (thread_id, chans)).fetchall()
            }

        return await self._read(read)

    async def delete_checkpoints(self, thread_id: str, doomed: dict[str, list[str]]) -> None:
        drop_writes = self._sql(DELETE_CHECKPOINT_WRITES_SQL)
        drop = self._sql(DELETE_CHECKPOINT_SQL)
        unlink = self._sql(PRUNE_PARENTS_SQL)
        gc = self._sql(PRUNE_BLOBS_SQL)

        def prune(conn: sqlite3.Connection) -> None:
            for ns, ids in doomed.items():
                rows = [(thread_id, ns, cid) for cid in ids]
                conn.executemany(drop_writes, rows)
                conn.executemany(drop, rows)
                conn.executemany(unlink, rows)
                conn.execute(gc, (thread_id, ns))

        await self._write(prune)

    async def mark_dirty(self, thread_ids: Sequence[str]) -> None:
        sql = self._sql(MARK_DIRTY_SQL)
        await self._write(lambda conn: [conn.execute(sql, (t,)) for t in thread_ids] and None)

    async def dirty_threads(self, limit: int) -> list[tuple[str, int]]:
        sql = self._sql(DIRTY_THREADS_SQL)
        return await self._read(
            lambda conn: [(t, int(q)) for t, q in conn.execute(sql, (limit,)).fetchall()]
        )

    async def clear_dirty(self, entries: Sequence[tuple[str, int]]) -> None:
        sql = self._sql(CLEAR_DIRTY_SQL)
        await self._write(lambda conn: conn.executemany(sql, list(entries)) and None)

    async def threads_older_than(self, cutoff_epoch_s: float, after: str, limit: int) -> list[str]:
        sql = self._sql(STALE_THREADS_SQL)
        args = (cutoff_epoch_s, after, limit)
        return await self._read(lambda conn: [r[0] for r in conn.execute(sql, args).fetchall()])
