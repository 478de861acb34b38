"""The Postgres durable tier, on an asyncpg pool: reading checkpoints, listings and parent chains.

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

from langgraph_resilient.checkpoint import codec
from langgraph_resilient.checkpoint.durable.postgres.connection import PostgresConnection
from langgraph_resilient.checkpoint.records import (
    ChainLink,
    CheckpointRow,
    ListQuery,
    WriteRecord,
)

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


class PostgresReads(PostgresConnection):
    """``get_tuple``, ``list`` and ``get_delta_channel_history``, one statement each."""

    async def get_checkpoint(
        self, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None
    ) -> CheckpointRow | None:
        pool = self._pool()
        if checkpoint_id is None:
            row = await pool.fetchrow(self._sql(GET_LATEST_SQL), thread_id, checkpoint_ns)
        else:
            row = await pool.fetchrow(
                self._sql(GET_CHECKPOINT_SQL), thread_id, checkpoint_ns, checkpoint_id
            )
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
        sql = self._sql(SELECT_CHECKPOINT_SQL)
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
            self._sql(PARENT_CHAIN_SQL), thread_id, checkpoint_ns, checkpoint_id, list(channels)
        )
        return [
            ChainLink(
                checkpoint_id=r["checkpoint_id"],
                seeds={ch: (typ, data) for ch, typ, data in _blobs(r)},
                writes=_writes(r),
            )
            for r in rows
        ]
