"""The Postgres durable tier, on an asyncpg pool: checkpoints and pending writes, plain and fenced.

Every hot-path operation is a single statement, so it is its own transaction and costs one
round trip once asyncpg has prepared it. Table names carry the saver's prefix (``{p}`` in the
statements); every primary key starts with ``thread_id`` so the tables shard by thread (Citus)
without redesign. Text keys use the "C" collation so that the database orders ids exactly as
Python does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langgraph_resilient.checkpoint.durable.postgres.connection import PostgresConnection
from langgraph_resilient.checkpoint.durable.rows import (
    blob_rows,
    checkpoint_records,
    fence_epochs,
    write_rows,
)
from langgraph_resilient.checkpoint.fencing import check_fence, check_head
from langgraph_resilient.checkpoint.records import (
    Batch,
    CheckpointRecord,
    Stored,
    WriteRecord,
    WritesOp,
)

# A pending write keeps the first value stored for its (task_id, idx) when it is a regular
# write, and the latest when it is special (negative idx: error, interrupt, resume, scheduled).
# Every statement that writes pending writes ends with this clause; the same rule's other
# definitions are records.is_special (Python), the SQLite upsert and WRITES_LUA (Redis).
_WRITES_ON_CONFLICT = """
    ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE
        SET channel = EXCLUDED.channel, type = EXCLUDED.type, blob = EXCLUDED.blob,
            task_path = EXCLUDED.task_path
        WHERE {p}writes.idx < 0"""

# Plain (unfenced) writes, group-committed: all checkpoints, values and pending writes of a
# batch in one statement, so one transaction and one round trip, however many graph steps of
# however many threads it carries. Parameters are column arrays; the caller sends each key
# once. Repeating a batch (a retry after a lost reply) changes nothing: values and checkpoints
# never change once stored, regular writes keep their first value and special ones (negative
# idx: error, interrupt, resume, scheduled) their latest. Threads once written under a lease
# have `heads` rows; plain writes move them too, so the next fenced write compares its parent
# against the real head. A batch with only writes, or only checkpoints, uses a statement with
# just those parts: the empty parts are not free to plan and run.
_BATCH_BLOBS = """new_blobs AS (
    INSERT INTO {p}blobs (thread_id, checkpoint_ns, channel, version, type, blob)
    SELECT * FROM unnest($B1::text[], $B2::text[], $B3::text[], $B4::text[], $B5::text[],
        $B6::bytea[])
    ON CONFLICT DO NOTHING
)"""
_BATCH_WRITES = (
    """new_writes AS (
    INSERT INTO {p}writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx,
        channel, type, blob)
    SELECT * FROM unnest($W1::text[], $W2::text[], $W3::text[], $W4::text[], $W5::text[],
        $W6::int[], $W7::text[], $W8::text[], $W9::bytea[])"""
    + _WRITES_ON_CONFLICT
    + """
    RETURNING thread_id, checkpoint_ns, checkpoint_id, task_id, idx
)"""
)
_BATCH_HEADS = """moved_heads AS (
    UPDATE {p}heads h SET checkpoint_id = n.checkpoint_id
    FROM (
        SELECT thread_id, checkpoint_ns, max(checkpoint_id) AS checkpoint_id
        FROM unnest($C1::text[], $C2::text[], $C3::text[])
            AS u(thread_id, checkpoint_ns, checkpoint_id)
        GROUP BY thread_id, checkpoint_ns
    ) n
    WHERE h.thread_id = n.thread_id AND h.checkpoint_ns = n.checkpoint_ns
        AND h.checkpoint_id < n.checkpoint_id
)"""
_BATCH_CHECKPOINTS = """new_checkpoints AS (
    INSERT INTO {p}checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
        run_key, body_type, body, metadata_type, metadata, metadata_json, channel_versions)
    SELECT * FROM unnest($C1::text[], $C2::text[], $C3::text[], $C4::text[], $C5::text[],
        $C6::text[], $C7::bytea[], $C8::text[], $C9::bytea[], $C10::jsonb[], $C11::jsonb[])
    ON CONFLICT DO NOTHING
    RETURNING thread_id, checkpoint_ns, checkpoint_id
)"""


def _batch_sql(*, checkpoints: bool, writes: bool) -> str:
    """The group-commit statement for a batch holding checkpoints and/or writes.

    Parameters come in this order: values (6 arrays) and checkpoints (11) when there are
    checkpoints, then writes (9) when there are writes. Returns the rows it really changed:
    ``(thread, ns, checkpoint, NULL, NULL)`` per inserted checkpoint (a repeated one was
    stored before, maybe changed since by a prune) and ``(thread, ns, checkpoint, task, idx)``
    per write inserted or replaced (a repeated regular write keeps its first value).
    """
    parts: list[tuple[str, str, int]] = []  # (CTE, placeholder letter, width)
    if checkpoints:
        parts += [(_BATCH_BLOBS, "B", 6), (_BATCH_HEADS + ", " + _BATCH_CHECKPOINTS, "C", 11)]
    if writes:
        parts.append((_BATCH_WRITES, "W", 9))
    ctes, first = [], 1
    for cte, letter, width in parts:
        for i in range(width, 0, -1):  # longest first: $C11 before $C1
            cte = cte.replace(f"${letter}{i}:", f"${first + i - 1}:")
        ctes.append(cte)
        first += width
    selects = []
    if checkpoints:
        selects.append(
            "SELECT thread_id, checkpoint_ns, checkpoint_id, NULL, NULL FROM new_checkpoints"
        )
    if writes:
        selects.append(
            "SELECT thread_id, checkpoint_ns, checkpoint_id, task_id, idx FROM new_writes"
        )
    return "WITH " + ",\n".join(ctes) + "\n" + "\nUNION ALL\n".join(selects)


WRITE_BATCH_SQL = {
    (c, w): _batch_sql(checkpoints=c, writes=w)
    for c in (True, False)
    for w in (True, False)
    if c or w
}
"""The three shapes of the group-commit statement, by (has checkpoints, has writes)."""

# Pieces of the fenced (single-record) writes: each row is written only if the fence and, for
# a checkpoint, the head check hold.
_INSERT_BLOBS = """
    INSERT INTO {p}blobs (thread_id, checkpoint_ns, channel, version, type, blob)
    SELECT $1, $2, b.channel, b.version, b.type, b.blob
    FROM unnest($10::text[], $11::text[], $12::text[], $13::bytea[])
        AS b(channel, version, type, blob)
    WHERE EXISTS (SELECT 1 FROM advance)
    ON CONFLICT DO NOTHING"""
_INSERT_CHECKPOINT = """
    INSERT INTO {p}checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
        run_key, body_type, body, metadata_type, metadata, metadata_json, channel_versions)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $14::jsonb, $15::jsonb
    WHERE EXISTS (SELECT 1 FROM advance)
    ON CONFLICT DO NOTHING
    RETURNING 1"""
_INSERT_WRITES = (
    """
    INSERT INTO {p}writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx,
        channel, type, blob)
    SELECT $1, $2, $3, $4, $5, w.idx, w.channel, w.type, w.blob
    FROM unnest($6::int[], $7::text[], $8::text[], $9::bytea[]) AS w(idx, channel, type, blob)
    WHERE EXISTS (SELECT 1 FROM fence)"""
    + _WRITES_ON_CONFLICT
)
# The fence: raise the thread's epoch to `{epoch}` unless it is already higher. ON CONFLICT DO
# UPDATE locks the row and re-reads its newest version, so concurrent writers of one thread
# serialize here and a superseded lease finds the newer epoch and writes nothing.
_FENCE = """
fence AS (
    INSERT INTO {p}threads AS t (thread_id, epoch) VALUES ($1, {epoch})
    ON CONFLICT (thread_id) DO UPDATE SET epoch = EXCLUDED.epoch, updated_at = now()
        WHERE t.epoch <= EXCLUDED.epoch
    RETURNING 1
)"""

# A put under a lease ($16 is its epoch): the fence, then a compare-and-set of the namespace's
# head from the checkpoint's parent to the checkpoint (a retry of the same put passes too), then
# the rows, written only if both hold. The first fenced write of a namespace takes the newest
# stored checkpoint as the head. Returns which check failed, if any.
PUT_CHECKPOINT_FENCED_SQL = f"""
WITH {_FENCE.replace("{epoch}", "$16")}, advance AS (
    INSERT INTO {{p}}heads AS h (thread_id, checkpoint_ns, checkpoint_id)
    SELECT $1, $2, $3 FROM fence
    WHERE EXISTS (SELECT 1 FROM {{p}}heads WHERE thread_id = $1 AND checkpoint_ns = $2)
        OR (SELECT max(checkpoint_id) FROM {{p}}checkpoints
            WHERE thread_id = $1 AND checkpoint_ns = $2) IS NOT DISTINCT FROM $4::text
        OR (SELECT max(checkpoint_id) FROM {{p}}checkpoints
            WHERE thread_id = $1 AND checkpoint_ns = $2) = $3
    ON CONFLICT (thread_id, checkpoint_ns) DO UPDATE SET checkpoint_id = EXCLUDED.checkpoint_id
        WHERE h.checkpoint_id IS NOT DISTINCT FROM $4::text
            OR h.checkpoint_id = EXCLUDED.checkpoint_id
    RETURNING 1
), new_blobs AS ({_INSERT_BLOBS}
), new_checkpoint AS ({_INSERT_CHECKPOINT}
)
SELECT EXISTS (SELECT 1 FROM fence) AS fenced, EXISTS (SELECT 1 FROM advance) AS advanced,
    EXISTS (SELECT 1 FROM new_checkpoint) AS inserted
"""

# Fenced writes, group-committed: several leases' checkpoints and writes in one statement, all
# or nothing. The fence is raised for every thread ($1, $2: distinct threads and their epochs),
# every namespace's head moves from the checkpoint's parent to the checkpoint (UPDATE re-checks
# its condition on the newest row version once it holds the lock, as the single fenced put's
# ON CONFLICT does), and the rows are written. If any fence or head check fails, the last part
# divides by zero: the statement, and so every change it made, is rolled back, and the caller
# replays the writes one by one to learn which failed and why. Parameters: $1-$2 fence,
# $3-$8 values, $9-$19 checkpoints, $20-$28 writes, $29 number of threads, $30 of checkpoints.
# One checkpoint per (thread, namespace) per batch: a second one fails the batch.
WRITE_FENCED_BATCH_SQL = (
    """
WITH fence AS (
    INSERT INTO {p}threads AS t (thread_id, epoch)
    SELECT * FROM unnest($1::text[], $2::bigint[])
    ON CONFLICT (thread_id) DO UPDATE SET epoch = EXCLUDED.epoch, updated_at = now()
        WHERE t.epoch <= EXCLUDED.epoch
    RETURNING thread_id
), cps AS (
    SELECT * FROM unnest($9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
        $14::text[], $15::bytea[], $16::text[], $17::bytea[], $18::jsonb[], $19::jsonb[])
        AS c(thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, run_key, body_type,
            body, metadata_type, metadata, metadata_json, channel_versions)
    WHERE c.thread_id IN (SELECT thread_id FROM fence)
), moved AS (
    UPDATE {p}heads h SET checkpoint_id = c.checkpoint_id
    FROM cps c
    WHERE h.thread_id = c.thread_id AND h.checkpoint_ns = c.checkpoint_ns
        AND (h.checkpoint_id IS NOT DISTINCT FROM c.parent_checkpoint_id
            OR h.checkpoint_id = c.checkpoint_id)
    RETURNING h.thread_id
), started AS (
    INSERT INTO {p}heads (thread_id, checkpoint_ns, checkpoint_id)
    SELECT c.thread_id, c.checkpoint_ns, c.checkpoint_id FROM cps c
    WHERE NOT EXISTS (SELECT 1 FROM {p}heads x
            WHERE x.thread_id = c.thread_id AND x.checkpoint_ns = c.checkpoint_ns)
        AND coalesce((SELECT max(m.checkpoint_id) FROM {p}checkpoints m
                WHERE m.thread_id = c.thread_id AND m.checkpoint_ns = c.checkpoint_ns), '')
            IN (coalesce(c.parent_checkpoint_id, ''), c.checkpoint_id)
    ON CONFLICT DO NOTHING
    RETURNING thread_id
), new_blobs AS (
    INSERT INTO {p}blobs (thread_id, checkpoint_ns, channel, version, type, blob)
    SELECT * FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
        $8::bytea[]) AS b(thread_id, checkpoint_ns, channel, version, type, blob)
    WHERE b.thread_id IN (SELECT thread_id FROM fence)
    ON CONFLICT DO NOTHING
), new_checkpoints AS (
    INSERT INTO {p}checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
        run_key, body_type, body, metadata_type, metadata, metadata_json, channel_versions)
    SELECT * FROM cps
    ON CONFLICT DO NOTHING
    RETURNING thread_id, checkpoint_ns, checkpoint_id
), new_writes AS (
    INSERT INTO {p}writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx,
        channel, type, blob)
    SELECT * FROM unnest($20::text[], $21::text[], $22::text[], $23::text[], $24::text[],
        $25::int[], $26::text[], $27::text[], $28::bytea[])
        AS w(thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type,
            blob)
    WHERE w.thread_id IN (SELECT thread_id FROM fence)"""
    + _WRITES_ON_CONFLICT
    + """
    RETURNING thread_id, checkpoint_ns, checkpoint_id, task_id, idx
)
SELECT thread_id, checkpoint_ns, checkpoint_id, NULL AS task_id, NULL::int AS idx
FROM new_checkpoints
UNION ALL
SELECT thread_id, checkpoint_ns, checkpoint_id, task_id, idx FROM new_writes
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL
WHERE 1 / (CASE WHEN (SELECT count(*) FROM fence) = $29
    AND (SELECT count(*) FROM moved) + (SELECT count(*) FROM started) = $30
    THEN 1 ELSE 0 END) = 0
"""
)

# A task's writes under a lease ($10 is its epoch): written only if the fence holds.
PUT_WRITES_FENCED_SQL = f"""
WITH {_FENCE.replace("{epoch}", "$10")}, new_writes AS ({_INSERT_WRITES}
    RETURNING idx
)
SELECT EXISTS (SELECT 1 FROM fence) AS fenced, ARRAY(SELECT idx FROM new_writes) AS stored
"""


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as ``width`` column arrays (the shape ``unnest`` takes)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


def _checkpoint_columns(cps: Sequence[CheckpointRecord]) -> list[list[Any]]:
    """Checkpoint records as the 11 column arrays the batch statements unnest."""
    return [
        [c.thread_id for c in cps],
        [c.checkpoint_ns for c in cps],
        [c.checkpoint_id for c in cps],
        [c.parent_id for c in cps],
        [c.run_key for c in cps],
        [c.body[0] for c in cps],
        [c.body[1] for c in cps],
        [c.metadata[0] for c in cps],
        [c.metadata[1] for c in cps],
        [c.metadata_json for c in cps],
        [json.dumps(c.channel_versions) for c in cps],
    ]


def _stored(rows: Sequence[Any]) -> Stored:
    """A batch statement's result rows: inserted checkpoints (no task) and changed writes."""
    stored = Stored()
    for r in rows:
        if r[3] is None:
            stored.checkpoints.add((r[0], r[1], r[2]))
        else:
            stored.writes.add((r[0], r[1], r[2], r[3], r[4]))
    return stored


class PostgresWrites(PostgresConnection):
    """``put`` and ``put_writes``: group-committed batches, and fenced writes under a lease."""

    async def write_batch(self, batch: Batch) -> Stored:
        args: list[list[Any]] = []
        if batch.checkpoints:
            args += _columns(blob_rows(batch), 6)
            args += _checkpoint_columns(checkpoint_records(batch))
        if batch.writes:
            args += _columns(write_rows(batch), 9)
        sql = self._sql(WRITE_BATCH_SQL[(bool(batch.checkpoints), bool(batch.writes))])
        async with self._writer() as conn:
            return _stored(await conn.fetch(sql, *args))

    async def write_fenced_batch(self, batch: Batch) -> Stored:
        epochs = fence_epochs(batch)
        cps = checkpoint_records(batch)
        args = [
            list(epochs),
            list(epochs.values()),
            *_columns(blob_rows(batch), 6),
            *_checkpoint_columns(cps),
            *_columns(write_rows(batch), 9),
            len(epochs),
            len(cps),
        ]
        return _stored(await self._pool().fetch(self._sql(WRITE_FENCED_BATCH_SQL), *args))

    async def put_checkpoint(self, record: CheckpointRecord) -> bool:
        if record.epoch is None:
            return bool((await self.write_batch(Batch(checkpoints=[record]))).checkpoints)
        blobs = record.blobs
        args = [
            record.thread_id,
            record.checkpoint_ns,
            record.checkpoint_id,
            record.parent_id,
            record.run_key,
            record.body[0],
            record.body[1],
            record.metadata[0],
            record.metadata[1],
            [b.channel for b in blobs],
            [b.version for b in blobs],
            [b.type for b in blobs],
            [b.data for b in blobs],
            record.metadata_json,
            json.dumps(record.channel_versions),
        ]
        row = await self._pool().fetchrow(self._sql(PUT_CHECKPOINT_FENCED_SQL), *args, record.epoch)
        check_fence(record.thread_id, record.epoch, row["fenced"])
        check_head(record, row["advanced"])
        return bool(row["inserted"])

    async def put_writes(
        self,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str,
        writes: Sequence[WriteRecord],
        epoch: int | None,
    ) -> set[tuple[str, int]]:
        if epoch is None:
            op = WritesOp(thread_id, checkpoint_ns, checkpoint_id, list(writes))
            stored = await self.write_batch(Batch(writes=[op]))
            return {(w[3], w[4]) for w in stored.writes}
        args = [
            thread_id,
            checkpoint_ns,
            checkpoint_id,
            writes[0].task_id,
            writes[0].task_path,
            [w.idx for w in writes],
            [w.channel for w in writes],
            [w.type for w in writes],
            [w.data for w in writes],
        ]
        row = await self._pool().fetchrow(self._sql(PUT_WRITES_FENCED_SQL), *args, epoch)
        check_fence(thread_id, epoch, row["fenced"])
        return {(writes[0].task_id, idx) for idx in row["stored"]}
