"""The Postgres durable tier, on an asyncpg pool.

Every hot-path operation is a single statement, so it is its own transaction and costs one
round trip once asyncpg has prepared it. Table names carry the saver's prefix; every primary
key starts with ``thread_id`` so the tables shard by thread (Citus) without redesign. Text keys
use the "C" collation so that the database orders ids exactly as Python does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from langgraph_resilient.checkpoint import codec
from langgraph_resilient.checkpoint.batcher import (
    Batch,
    Stored,
    WritesOp,
    blob_rows,
    checkpoint_records,
    fence_epochs,
    write_rows,
)
from langgraph_resilient.checkpoint.records import (
    ChainLink,
    CheckpointRecord,
    CheckpointRow,
    ListQuery,
    WriteRecord,
)
from langgraph_resilient.checkpoint.schema import SCHEMA_VERSION, check_version
from langgraph_resilient.checkpoint.settings import PostgresSettings, redact
from langgraph_resilient.checkpoint.store import (
    EPOCH_BAND,
    EpochRaise,
    Skeleton,
    check_fence,
    check_head,
)
from langgraph_resilient.errors import SchemaVersionError, TierUnavailableError

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
_BATCH_WRITES = """new_writes AS (
    INSERT INTO {p}writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx,
        channel, type, blob)
    SELECT * FROM unnest($W1::text[], $W2::text[], $W3::text[], $W4::text[], $W5::text[],
        $W6::int[], $W7::text[], $W8::text[], $W9::bytea[])
    ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE
        SET channel = EXCLUDED.channel, type = EXCLUDED.type, blob = EXCLUDED.blob,
            task_path = EXCLUDED.task_path
        WHERE {p}writes.idx < 0
    RETURNING thread_id, checkpoint_ns, checkpoint_id, task_id, idx
)"""
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
_INSERT_WRITES = """
    INSERT INTO {p}writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx,
        channel, type, blob)
    SELECT $1, $2, $3, $4, $5, w.idx, w.channel, w.type, w.blob
    FROM unnest($6::int[], $7::text[], $8::text[], $9::bytea[]) AS w(idx, channel, type, blob)
    WHERE EXISTS (SELECT 1 FROM fence)
    ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE
        SET channel = EXCLUDED.channel, type = EXCLUDED.type, blob = EXCLUDED.blob,
            task_path = EXCLUDED.task_path
        WHERE {p}writes.idx < 0"""
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
WRITE_FENCED_BATCH_SQL = """
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
    WHERE w.thread_id IN (SELECT thread_id FROM fence)
    ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE
        SET channel = EXCLUDED.channel, type = EXCLUDED.type, blob = EXCLUDED.blob,
            task_path = EXCLUDED.task_path
        WHERE {p}writes.idx < 0
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

# A task's writes under a lease ($10 is its epoch): written only if the fence holds.
PUT_WRITES_FENCED_SQL = f"""
WITH {_FENCE.replace("{epoch}", "$10")}, new_writes AS ({_INSERT_WRITES}
    RETURNING idx
)
SELECT EXISTS (SELECT 1 FROM fence) AS fenced, ARRAY(SELECT idx FROM new_writes) AS stored
"""

# A checkpoint with its non-empty channel values and its pending writes, as parallel arrays.
# The WHERE/ORDER/LIMIT tail is appended by the caller (get_checkpoint, list_page).
SELECT_CHECKPOINT_SQL = """
SELECT c.thread_id, c.checkpoint_ns, c.checkpoint_id, c.parent_checkpoint_id,
    c.body_type, c.body, c.metadata_type, c.metadata, c.channel_versions::text AS versions,
    b.channels, b.types, b.blobs,
    w.task_ids, w.idxs, w.channels AS w_channels, w.types AS w_types, w.blobs AS w_blobs,
    w.paths AS w_paths
FROM {p}checkpoints c
LEFT JOIN LATERAL (
    SELECT array_agg(bl.channel) AS channels, array_agg(bl.type) AS types,
        array_agg(bl.blob) AS blobs
    FROM jsonb_each_text(c.channel_versions) AS v(channel, version)
    JOIN {p}blobs bl ON bl.thread_id = c.thread_id AND bl.checkpoint_ns = c.checkpoint_ns
        AND bl.channel = v.channel AND bl.version = v.version
    WHERE bl.blob IS NOT NULL
) b ON true
LEFT JOIN LATERAL (
    SELECT array_agg(wr.task_id) AS task_ids, array_agg(wr.idx) AS idxs,
        array_agg(wr.channel) AS channels, array_agg(wr.type) AS types,
        array_agg(wr.blob) AS blobs, array_agg(wr.task_path) AS paths
    FROM {p}writes wr
    WHERE wr.thread_id = c.thread_id AND wr.checkpoint_ns = c.checkpoint_ns
        AND wr.checkpoint_id = c.checkpoint_id
) w ON true
"""
GET_CHECKPOINT_SQL = (
    SELECT_CHECKPOINT_SQL
    + "WHERE c.thread_id = $1 AND c.checkpoint_ns = $2 AND c.checkpoint_id = $3"
)
# The head: the primary key index read backwards, one row.
GET_LATEST_SQL = (
    SELECT_CHECKPOINT_SQL
    + "WHERE c.thread_id = $1 AND c.checkpoint_ns = $2 ORDER BY c.checkpoint_id DESC LIMIT 1"
)

# The ancestors of a checkpoint, parent first, in one recursive query. Each link carries the
# requested channels still unseeded when the walk reaches it (`pending`) and after it (`left`);
# the walk stops once no channel is left, so a snapshot ends it early.
PARENT_CHAIN_SQL = """
WITH RECURSIVE target AS (
    SELECT parent_checkpoint_id FROM {p}checkpoints
    WHERE thread_id = $1 AND checkpoint_ns = $2 AND ($3::text IS NULL OR checkpoint_id = $3)
    ORDER BY checkpoint_id DESC LIMIT 1
), chain AS (
    SELECT c.checkpoint_id, c.parent_checkpoint_id, c.channel_versions, 0 AS depth,
        $4::text[] AS pending,
        ARRAY(SELECT ch FROM unnest($4::text[]) AS ch WHERE NOT EXISTS (
            SELECT 1 FROM {p}blobs bl WHERE bl.thread_id = $1 AND bl.checkpoint_ns = $2
                AND bl.channel = ch AND bl.version = c.channel_versions ->> ch
                AND bl.blob IS NOT NULL)) AS left_over
    FROM target JOIN {p}checkpoints c ON c.thread_id = $1 AND c.checkpoint_ns = $2
        AND c.checkpoint_id = target.parent_checkpoint_id
  UNION ALL
    SELECT p.checkpoint_id, p.parent_checkpoint_id, p.channel_versions, chain.depth + 1,
        chain.left_over,
        ARRAY(SELECT ch FROM unnest(chain.left_over) AS ch WHERE NOT EXISTS (
            SELECT 1 FROM {p}blobs bl WHERE bl.thread_id = $1 AND bl.checkpoint_ns = $2
                AND bl.channel = ch AND bl.version = p.channel_versions ->> ch
                AND bl.blob IS NOT NULL))
    FROM chain JOIN {p}checkpoints p ON p.thread_id = $1 AND p.checkpoint_ns = $2
        AND p.checkpoint_id = chain.parent_checkpoint_id
    WHERE cardinality(chain.left_over) > 0 AND chain.depth < 1000000
)
SELECT chain.checkpoint_id, s.channels, s.types, s.blobs,
    w.task_ids, w.idxs, w.channels AS w_channels, w.types AS w_types, w.blobs AS w_blobs,
    w.paths AS w_paths
FROM chain
LEFT JOIN LATERAL (
    SELECT array_agg(bl.channel) AS channels, array_agg(bl.type) AS types,
        array_agg(bl.blob) AS blobs
    FROM {p}blobs bl
    WHERE bl.thread_id = $1 AND bl.checkpoint_ns = $2
        AND bl.channel = ANY(chain.pending) AND NOT bl.channel = ANY(chain.left_over)
        AND bl.version = chain.channel_versions ->> bl.channel AND bl.blob IS NOT NULL
) s ON true
LEFT JOIN LATERAL (
    SELECT array_agg(wr.task_id) AS task_ids, array_agg(wr.idx) AS idxs,
        array_agg(wr.channel) AS channels, array_agg(wr.type) AS types,
        array_agg(wr.blob) AS blobs, array_agg(wr.task_path) AS paths
    FROM {p}writes wr
    WHERE wr.thread_id = $1 AND wr.checkpoint_ns = $2 AND wr.checkpoint_id = chain.checkpoint_id
        AND wr.channel = ANY(chain.pending)
) w ON true
ORDER BY chain.depth
"""

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

_TRANSIENT = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    # Raised by asyncpg when a server that is still starting (or shutting down) answers a new
    # connection unexpectedly; the next attempt finds it up.
    asyncpg.exceptions.InternalClientError,
)


def _why_not_connected(exc: BaseException, settings: PostgresSettings) -> str:
    """A connection failure as a user can act on it (asyncpg's own messages name no limit)."""
    if isinstance(exc, TimeoutError):
        return (
            f"no answer within connect_timeout_s={settings.connect_timeout_s:g}s: check that the "
            "host and port are right and reachable (a firewall that drops packets looks like "
            "this), or raise connect_timeout_s"
        )
    if isinstance(exc, asyncpg.exceptions.InvalidAuthorizationSpecificationError):
        return f"the server refused the credentials ({exc}): check the user and password in the URL"
    if isinstance(exc, asyncpg.exceptions.InvalidCatalogNameError):
        return f"{exc}: create the database or fix its name in the URL"
    return f"{type(exc).__name__}: {exc}"


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


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset hook that sends nothing.

    asyncpg's default reset sends RESET ALL/UNLISTEN/... on every release: one extra round trip
    per operation. The saver leaves no session state behind (no SET, LISTEN, cursors or session
    advisory locks), and asyncpg still rolls back any transaction left open before this runs.
    """


def _writes(row: Any, prefix: str = "w_") -> list[WriteRecord]:
    task_ids = row["task_ids"]
    if not task_ids:
        return []
    return [
        WriteRecord(task_id, idx, channel, typ, data, path)
        for task_id, idx, channel, typ, data, path in zip(
            task_ids,
            row["idxs"],
            row[f"{prefix}channels"],
            row[f"{prefix}types"],
            row[f"{prefix}blobs"],
            row[f"{prefix}paths"],
            strict=True,
        )
    ]


def _blobs(row: Any) -> list[tuple[str, str, bytes]]:
    channels = row["channels"]
    if not channels:
        return []
    return list(zip(channels, row["types"], row["blobs"], strict=True))


def _row(row: Any) -> CheckpointRow:
    return CheckpointRow(
        thread_id=row["thread_id"],
        checkpoint_ns=row["checkpoint_ns"],
        checkpoint_id=row["checkpoint_id"],
        parent_id=row["parent_checkpoint_id"],
        body=(row["body_type"], row["body"]),
        metadata=(row["metadata_type"], row["metadata"]),
        blobs=_blobs(row),
        writes=_writes(row),
        versions=json.loads(row["versions"]),
    )


class PostgresStore:
    """The durable tier on Postgres. Created by ``ResilientSaver.from_urls(postgres_url=...)``."""

    tier = "postgres"

    def __init__(self, settings: PostgresSettings, *, prefix: str) -> None:
        self.settings = settings
        # Group-committed writes run on their own connections (taking a pool connection costs
        # more than a small statement); the rest of max_size serves reads and fenced writes.
        self.write_parallelism = min(4, max(1, settings.max_size // 3))
        self._writers: asyncio.Queue[asyncpg.Connection | None] | None = None
        self._writer_conns: list[asyncpg.Connection] = []
        self.prefix = prefix
        self.pool: asyncpg.Pool | None = None
        p = prefix
        self._write_batch = {k: v.format(p=p) for k, v in WRITE_BATCH_SQL.items()}
        self._put_checkpoint_fenced = PUT_CHECKPOINT_FENCED_SQL.format(p=p)
        self._put_writes_fenced = PUT_WRITES_FENCED_SQL.format(p=p)
        self._write_fenced_batch = WRITE_FENCED_BATCH_SQL.format(p=p)
        self._get = GET_CHECKPOINT_SQL.format(p=p)
        self._get_latest = GET_LATEST_SQL.format(p=p)
        self._select = SELECT_CHECKPOINT_SQL.format(p=p)
        self._chain = PARENT_CHAIN_SQL.format(p=p)

    def _sql(self, template: str) -> str:
        return template.format(p=self.prefix)

    def _pool(self) -> asyncpg.Pool:
        if self.pool is None:
            raise TierUnavailableError(self.tier, "the pool is closed (enter the saver first)")
        return self.pool

    # ---------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        s = self.settings
        try:
            readers = max(1, s.max_size - self.write_parallelism)
            async with asyncio.timeout(s.connect_timeout_s * 2):
                pool = await asyncpg.create_pool(
                    dsn=s.url,
                    min_size=min(s.min_size, readers),
                    max_size=readers,
                    timeout=s.connect_timeout_s,
                    command_timeout=s.command_timeout_s,
                    statement_cache_size=0 if s.pgbouncer else 256,
                    max_inactive_connection_lifetime=s.max_inactive_connection_lifetime_s,
                    reset=_keep_session,
                )
            self.pool = pool
            await pool.fetchval("SELECT 1", timeout=s.connect_timeout_s)
            self._writers = asyncio.Queue()
            for _ in range(self.write_parallelism):
                self._writers.put_nowait(None)  # connected on first use
        except Exception as exc:
            if self.pool is not None:
                self.pool.terminate()
                self.pool = None
            raise TierUnavailableError(
                self.tier, f"cannot connect to {redact(s.url)}: {_why_not_connected(exc, s)}"
            ) from exc

    async def _connect(self) -> asyncpg.Connection:
        s = self.settings
        return await asyncpg.connect(
            dsn=s.url,
            timeout=s.connect_timeout_s,
            command_timeout=s.command_timeout_s,
            statement_cache_size=0 if s.pgbouncer else 256,
        )

    @contextlib.asynccontextmanager
    async def _writer(self) -> AsyncIterator[asyncpg.Connection]:
        """One of the group-commit connections; a broken one is replaced on next use."""
        writers = self._writers
        if writers is None:
            raise TierUnavailableError(self.tier, "the store is closed (enter the saver first)")
        conn = await writers.get()
        try:
            if conn is None or conn.is_closed():
                conn = None
                conn = await self._connect()
                self._writer_conns.append(conn)
            yield conn
        except BaseException as exc:
            if conn is not None and (
                self.is_transient(exc) or isinstance(exc, asyncio.CancelledError)
            ):
                conn.terminate()
                self._writer_conns.remove(conn)
                conn = None
            raise
        finally:
            writers.put_nowait(conn)

    def writer_connections(self) -> list[asyncpg.Connection]:
        """The open group-commit connections (for tests and diagnostics)."""
        return list(self._writer_conns)

    async def close(self) -> None:
        """Close every connection; one that does not close within ``connect_timeout_s`` (a
        server that stopped answering, a query still running) is terminated instead."""
        self._writers = None
        conns, self._writer_conns = self._writer_conns, []
        for conn in conns:
            try:
                async with asyncio.timeout(self.settings.connect_timeout_s):
                    await conn.close()
            except (TimeoutError, OSError, asyncpg.exceptions.InterfaceError):
                conn.terminate()
        pool, self.pool = self.pool, None
        if pool is not None:
            try:
                async with asyncio.timeout(self.settings.connect_timeout_s):
                    await pool.close()
            except (TimeoutError, OSError, asyncpg.exceptions.InterfaceError):
                pool.terminate()

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, _TRANSIENT)

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
            check_version(self.tier, current)
        async with self._pool().acquire() as conn, conn.transaction():
            await conn.execute(MIGRATION_LOCK_SQL, self._lock_key())
            await conn.execute(self._sql(CREATE_SCHEMA_TABLE_SQL))
            current = int(await conn.fetchval(self._sql(READ_VERSION_SQL)) or 0)
            if current > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{self.tier}: database schema {current} is newer than this release "
                    f"({SCHEMA_VERSION}); upgrade langgraph-resilient"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                await conn.execute(self._sql(MIGRATIONS[version - 1]))
                await conn.execute(self._sql(WRITE_VERSION_SQL), version)
        return SCHEMA_VERSION

    # ---------------------------------------------------------------- writes

    async def write_batch(self, batch: Batch) -> Stored:
        args: list[list[Any]] = []
        if batch.checkpoints:
            args += _columns(blob_rows(batch), 6)
            args += _checkpoint_columns(checkpoint_records(batch))
        if batch.writes:
            args += _columns(write_rows(batch), 9)
        sql = self._write_batch[(bool(batch.checkpoints), bool(batch.writes))]
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
        return _stored(await self._pool().fetch(self._write_fenced_batch, *args))

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
        row = await self._pool().fetchrow(self._put_checkpoint_fenced, *args, record.epoch)
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
        row = await self._pool().fetchrow(self._put_writes_fenced, *args, epoch)
        check_fence(thread_id, epoch, row["fenced"])
        return {(writes[0].task_id, idx) for idx in row["stored"]}

    # ---------------------------------------------------------------- reads

    async def get_checkpoint(
        self, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None
    ) -> CheckpointRow | None:
        pool = self._pool()
        if checkpoint_id is None:
            row = await pool.fetchrow(self._get_latest, thread_id, checkpoint_ns)
        else:
            row = await pool.fetchrow(self._get, thread_id, checkpoint_ns, checkpoint_id)
        return None if row is None else _row(row)

    async def list_page(
        self, query: ListQuery, after: tuple[str, str, str] | None, size: int
    ) -> list[CheckpointRow]:
        where: list[str] = []
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if query.thread_id is not None:
            where.append(f"c.thread_id = {arg(query.thread_id)}")
        if query.checkpoint_ns is not None:
            where.append(f"c.checkpoint_ns = {arg(query.checkpoint_ns)}")
        if query.checkpoint_id is not None:
            where.append(f"c.checkpoint_id = {arg(query.checkpoint_id)}")
        if query.before_id is not None:
            where.append(f"c.checkpoint_id < {arg(query.before_id)}")
        for key, value in (query.metadata_filter or {}).items():
            # Only strings are pre-filtered in SQL: JSON equality differs from Python's for
            # None (a missing key matches), bools and numbers (1 == True == 1.0). The caller
            # filters exactly; rows without plaintext metadata (encrypting serde) pass here.
            encoded = codec.json_text(value) if isinstance(value, str) else None
            if encoded is None:
                continue
            key_arg, value_arg = arg(key), arg(encoded)
            where.append(
                f"(c.metadata_json IS NULL OR c.metadata_json -> {key_arg} = {value_arg}::jsonb)"
            )
        if after is not None:
            a, b, c = (arg(v) for v in after)
            where.append(f"(c.checkpoint_id, c.thread_id, c.checkpoint_ns) < ({a}, {b}, {c})")
        sql = self._select
        if where:
            sql += "WHERE " + " AND ".join(where)
        sql += (
            " ORDER BY c.checkpoint_id DESC, c.thread_id DESC, c.checkpoint_ns DESC"
            f" LIMIT {arg(size)}"
        )
        rows = await self._pool().fetch(sql, *args)
        return [_row(r) for r in rows]

    async def parent_chain(
        self,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str | None,
        channels: Sequence[str],
    ) -> list[ChainLink]:
        rows = await self._pool().fetch(
            self._chain, thread_id, checkpoint_ns, checkpoint_id, list(channels)
        )
        return [
            ChainLink(
                checkpoint_id=r["checkpoint_id"],
                seeds={ch: (typ, data) for ch, typ, data in _blobs(r)},
                writes=_writes(r),
            )
            for r in rows
        ]

    # ---------------------------------------------------------------- maintenance

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

    # ---- leases
    # The fallback thread lease (used when Redis is down or not configured) lives in the
    # `threads` row that also holds the fencing epoch: `lease_token` and `lease_expires_at`.
    # Expiry is judged by the database's own clock, so replicas' clocks never matter. Each
    # statement is one round trip and its own transaction; the row lock taken by ON CONFLICT DO
    # UPDATE serializes it with the fenced writes of the same thread. See docs/lease.md.

    # Take the lease if the row is free or expired, raising the epoch in the same statement:
    # +1 inside an even (durable-store) band, else to the first epoch of the next even band, so
    # the new epoch is above every epoch Redis handed out (store.fallback_epoch, in SQL).
    # Returns the new epoch; no row while another token holds a live lease.
    LEASE_ACQUIRE_SQL = """
    INSERT INTO {p}threads AS t (thread_id, epoch, lease_token, lease_expires_at)
    VALUES ($1, 1, $2, clock_timestamp() + make_interval(secs => $3))
    ON CONFLICT (thread_id) DO UPDATE
    SET epoch = CASE WHEN (t.epoch / $4::bigint) % 2 = 0 THEN t.epoch + 1
                     ELSE (t.epoch / $4::bigint + 1) * $4::bigint + 1 END,
        lease_token = EXCLUDED.lease_token, lease_expires_at = EXCLUDED.lease_expires_at,
        updated_at = now()
    WHERE t.lease_token IS NULL OR t.lease_expires_at IS NULL
        OR t.lease_expires_at <= clock_timestamp()
    RETURNING t.epoch
    """
    # Renew the lease for a token at its epoch, or take the row for a lease that moves here
    # from Redis (same epoch): only if no other token holds a live lease and no newer epoch was
    # stored (a newer epoch means the lease was taken over: the caller marks it lost).
    LEASE_HOLD_SQL = """
    INSERT INTO {p}threads AS t (thread_id, epoch, lease_token, lease_expires_at)
    VALUES ($1, $3, $2, clock_timestamp() + make_interval(secs => $4))
    ON CONFLICT (thread_id) DO UPDATE
    SET epoch = EXCLUDED.epoch, lease_token = EXCLUDED.lease_token,
        lease_expires_at = EXCLUDED.lease_expires_at, updated_at = now()
    WHERE t.epoch <= EXCLUDED.epoch
        AND (t.lease_token IS NULL OR t.lease_token = EXCLUDED.lease_token
             OR t.lease_expires_at IS NULL OR t.lease_expires_at <= clock_timestamp())
    RETURNING 1
    """
    # Compare-and-delete: only the holder's own token clears the row's lease.
    LEASE_RELEASE_SQL = """
    UPDATE {p}threads SET lease_token = NULL, lease_expires_at = NULL, updated_at = now()
    WHERE thread_id = $1 AND lease_token = $2
    """
    # Confirm a Redis epoch band: raise the stored epoch to the band's first number ($2) if it is
    # lower and no other token holds a live lease row. `raised` is decided under the row lock;
    # `held` and `epoch` (a snapshot) only tell the caller why nothing was raised.
    LEASE_RAISE_SQL = """
    WITH cur AS (
        SELECT epoch, lease_token IS NOT NULL AND lease_token <> $3
            AND lease_expires_at > clock_timestamp() AS held
        FROM {p}threads WHERE thread_id = $1
    ), raised AS (
        INSERT INTO {p}threads AS t (thread_id, epoch) VALUES ($1, $2)
        ON CONFLICT (thread_id) DO UPDATE SET epoch = EXCLUDED.epoch, updated_at = now()
        WHERE t.epoch < EXCLUDED.epoch
            AND (t.lease_token IS NULL OR t.lease_token = $3
                 OR t.lease_expires_at IS NULL OR t.lease_expires_at <= clock_timestamp())
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM raised) AS raised,
        coalesce((SELECT held FROM cur), false) AS held,
        coalesce((SELECT epoch FROM cur), 0) AS epoch
    """
    THREAD_EPOCH_SQL = "SELECT epoch FROM {p}threads WHERE thread_id = $1"

    async def lease_acquire(self, thread_id: str, token: str, ttl_s: float) -> int | None:
        epoch = await self._pool().fetchval(
            self._sql(self.LEASE_ACQUIRE_SQL), thread_id, token, float(ttl_s), EPOCH_BAND
        )
        return None if epoch is None else int(epoch)

    async def lease_hold(self, thread_id: str, token: str, epoch: int, ttl_s: float) -> bool:
        held = await self._pool().fetchval(
            self._sql(self.LEASE_HOLD_SQL), thread_id, token, epoch, float(ttl_s)
        )
        return held is not None

    async def lease_release(self, thread_id: str, token: str) -> None:
        await self._pool().execute(self._sql(self.LEASE_RELEASE_SQL), thread_id, token)

    async def lease_raise(self, thread_id: str, floor: int, token: str) -> EpochRaise:
        row = await self._pool().fetchrow(self._sql(self.LEASE_RAISE_SQL), thread_id, floor, token)
        return EpochRaise(bool(row["raised"]), bool(row["held"]), int(row["epoch"]))

    async def thread_epoch(self, thread_id: str) -> int:
        epoch = await self._pool().fetchval(self._sql(self.THREAD_EPOCH_SQL), thread_id)
        return int(epoch or 0)
