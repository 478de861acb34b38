"""The embedded durable tier, one SQLite file with no server:
Checkpoints and pending writes, plain and fenced.

One connection lives on one dedicated thread, so every statement runs in order and the event
loop never blocks on disk. WAL mode lets other processes read while this one writes; writes
from several processes wait for each other (``busy_timeout``). Each operation runs in one
transaction (``BEGIN IMMEDIATE`` for writes, so a retry never sees half of it). The schema and
every rule are the Postgres store's (``durable/postgres/``), written for SQLite.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence

from langgraph_resilient.checkpoint.durable.rows import (
    blob_rows,
    checkpoint_records,
    fence_epochs,
    write_rows,
)
from langgraph_resilient.checkpoint.durable.sqlite.connection import SqliteConnection
from langgraph_resilient.checkpoint.fencing import check_fence, check_head
from langgraph_resilient.checkpoint.records import (
    Batch,
    CheckpointRecord,
    Stored,
    WriteRecord,
    WritesOp,
)

INSERT_BLOB_SQL = """
INSERT INTO {p}blobs (thread_id, checkpoint_ns, channel, version, type, blob)
VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING
"""
INSERT_CHECKPOINT_SQL = """
INSERT INTO {p}checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
    run_key, body_type, body, metadata_type, metadata, metadata_json, channel_versions,
    created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING
"""
# Plain puts move a namespace's `heads` row (present once the thread was written under a lease)
# so the next fenced put compares its parent against the real head.
MOVE_HEAD_SQL = """
UPDATE {p}heads SET checkpoint_id = ?3
WHERE thread_id = ?1 AND checkpoint_ns = ?2 AND checkpoint_id < ?3
"""
# Fenced writes, inside the write transaction: the thread's epoch, raised unless it is higher.
READ_EPOCH_SQL = "SELECT epoch FROM {p}threads WHERE thread_id = ?"
RAISE_EPOCH_SQL = """
INSERT INTO {p}threads (thread_id, epoch, updated_at) VALUES (?1, ?2, ?3)
ON CONFLICT (thread_id) DO UPDATE SET epoch = excluded.epoch, updated_at = excluded.updated_at
"""
# The head a fenced put must extend: the `heads` row, or the newest checkpoint before the first.
READ_HEAD_SQL = """
SELECT coalesce(
    (SELECT checkpoint_id FROM {p}heads WHERE thread_id = ?1 AND checkpoint_ns = ?2),
    (SELECT max(checkpoint_id) FROM {p}checkpoints WHERE thread_id = ?1 AND checkpoint_ns = ?2))
"""
SET_HEAD_SQL = """
INSERT INTO {p}heads (thread_id, checkpoint_ns, checkpoint_id) VALUES (?1, ?2, ?3)
ON CONFLICT (thread_id, checkpoint_ns) DO UPDATE SET checkpoint_id = excluded.checkpoint_id
"""
# Regular writes keep the first value for (task_id, idx); special ones (idx < 0) the latest.
# The rule's one definition for SQLite; the others: records.is_special (Python),
# _WRITES_ON_CONFLICT in durable/postgres/writes.py and WRITES_LUA in cache/scripts.py.
UPSERT_WRITE_SQL = """
INSERT INTO {p}writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx,
    channel, type, blob)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE
    SET channel = excluded.channel, type = excluded.type, blob = excluded.blob,
        task_path = excluded.task_path
    WHERE {p}writes.idx < 0
"""


class SqliteWrites(SqliteConnection):
    """``put`` and ``put_writes``: batches in one transaction, fenced writes under a lease."""

    def _fence(self, conn: sqlite3.Connection, thread_id: str, epoch: int) -> None:
        """Inside a write transaction: refuse a superseded lease, else record its epoch."""
        row = conn.execute(self._sql(READ_EPOCH_SQL), (thread_id,)).fetchone()
        check_fence(thread_id, epoch, row is None or int(row[0]) <= epoch)
        conn.execute(self._sql(RAISE_EPOCH_SQL), (thread_id, epoch, time.time()))

    def _insert(self, conn: sqlite3.Connection, batch: Batch) -> Stored:
        """The rows of a batch (each key once), inside the caller's transaction; returns what
        it really changed (see ``DurableStore.write_batch``)."""
        cps = checkpoint_records(batch)
        now = time.time()
        stored = Stored()
        conn.executemany(self._sql(INSERT_BLOB_SQL), blob_rows(batch))
        upsert = self._sql(UPSERT_WRITE_SQL)
        for row in write_rows(batch):
            if conn.execute(upsert, row).rowcount:
                stored.writes.add((row[0], row[1], row[2], row[3], row[5]))
        conn.executemany(
            self._sql(MOVE_HEAD_SQL), [(c.thread_id, c.checkpoint_ns, c.checkpoint_id) for c in cps]
        )
        insert = self._sql(INSERT_CHECKPOINT_SQL)
        for c in cps:
            cursor = conn.execute(
                insert,
                (
                    c.thread_id,
                    c.checkpoint_ns,
                    c.checkpoint_id,
                    c.parent_id,
                    c.run_key,
                    c.body[0],
                    c.body[1],
                    c.metadata[0],
                    c.metadata[1],
                    c.metadata_json,
                    json.dumps(c.channel_versions),
                    now,
                ),
            )
            if cursor.rowcount:
                stored.checkpoints.add((c.thread_id, c.checkpoint_ns, c.checkpoint_id))
        return stored

    async def write_batch(self, batch: Batch) -> Stored:
        """Every write of a batch in one transaction (one fsync); returns the checkpoints it
        inserted."""
        return await self._write(lambda conn: self._insert(conn, batch))

    async def write_fenced_batch(self, batch: Batch) -> Stored:
        epochs = fence_epochs(batch)

        def put(conn: sqlite3.Connection) -> Stored:
            for thread_id, epoch in epochs.items():
                self._fence(conn, thread_id, epoch)
            for record in batch.checkpoints:
                tid, ns, cid = record.thread_id, record.checkpoint_ns, record.checkpoint_id
                (head,) = conn.execute(self._sql(READ_HEAD_SQL), (tid, ns)).fetchone()
                check_head(record, head in (record.parent_id, cid))
                conn.execute(self._sql(SET_HEAD_SQL), (tid, ns, cid))
            return self._insert(conn, batch)

        return await self._write(put)

    async def put_checkpoint(self, record: CheckpointRecord) -> bool:
        batch = Batch(checkpoints=[record])
        epoch = record.epoch
        if epoch is None:
            return bool((await self.write_batch(batch)).checkpoints)
        tid, ns, cid = record.thread_id, record.checkpoint_ns, record.checkpoint_id

        def put(conn: sqlite3.Connection) -> bool:
            self._fence(conn, tid, epoch)
            (head,) = conn.execute(self._sql(READ_HEAD_SQL), (tid, ns)).fetchone()
            check_head(record, head in (record.parent_id, cid))
            conn.execute(self._sql(SET_HEAD_SQL), (tid, ns, cid))
            return bool(self._insert(conn, batch).checkpoints)

        return await self._write(put)

    async def put_writes(
        self,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str,
        writes: Sequence[WriteRecord],
        epoch: int | None,
    ) -> set[tuple[str, int]]:
        batch = Batch(writes=[WritesOp(thread_id, checkpoint_ns, checkpoint_id, list(writes))])
        if epoch is None:
            return {(w[3], w[4]) for w in (await self.write_batch(batch)).writes}

        def put(conn: sqlite3.Connection) -> set[tuple[str, int]]:
            self._fence(conn, thread_id, epoch)
            return {(w[3], w[4]) for w in self._insert(conn, batch).writes}

        return await self._write(put)
