"""The embedded durable tier, one SQLite file with no server:
Reading checkpoints, listings and parent chains.

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
from typing import Any

from langgraph_resilient.checkpoint.durable.sqlite.connection import SqliteConnection
from langgraph_resilient.checkpoint.records import (
    ChainLink,
    CheckpointRow,
    ListQuery,
    WriteRecord,
)

SELECT_CHECKPOINT_SQL = """
SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, body_type, body,
    metadata_type, metadata, channel_versions
FROM {p}checkpoints
"""
# Non-empty values of the channels a checkpoint references.
SELECT_BLOBS_SQL = """
SELECT bl.channel, bl.type, bl.blob
FROM json_each(?) AS v
JOIN {p}blobs bl ON bl.thread_id = ? AND bl.checkpoint_ns = ?
    AND bl.channel = v.key AND bl.version = v.value
WHERE bl.blob IS NOT NULL
"""
SELECT_WRITES_SQL = """
SELECT task_id, idx, channel, type, blob, task_path FROM {p}writes
WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?
"""
# The parent chain of a checkpoint (parent first) in one recursive query, with the stored
# values ('seed' rows) and the writes of the requested channels ($4, a JSON list) along it.
# Unlike the Postgres query it does not stop at the seeds: reading local pages is cheap, and
# the caller ignores the links past them.
PARENT_CHAIN_SQL = """
WITH RECURSIVE chain(checkpoint_id, parent_checkpoint_id, channel_versions, depth) AS (
    SELECT c.checkpoint_id, c.parent_checkpoint_id, c.channel_versions, 0
    FROM {p}checkpoints c
    WHERE c.thread_id = ?1 AND c.checkpoint_ns = ?2 AND c.checkpoint_id = (
        SELECT parent_checkpoint_id FROM {p}checkpoints
        WHERE thread_id = ?1 AND checkpoint_ns = ?2 AND (?3 IS NULL OR checkpoint_id = ?3)
        ORDER BY checkpoint_id DESC LIMIT 1)
  UNION ALL
    SELECT p.checkpoint_id, p.parent_checkpoint_id, p.channel_versions, chain.depth + 1
    FROM chain JOIN {p}checkpoints p ON p.thread_id = ?1 AND p.checkpoint_ns = ?2
        AND p.checkpoint_id = chain.parent_checkpoint_id
)
SELECT chain.depth, chain.checkpoint_id, 'link', NULL, NULL, NULL, NULL, NULL, NULL
FROM chain
UNION ALL
SELECT chain.depth, chain.checkpoint_id, 'seed', NULL, v.key, NULL, bl.type, bl.blob, NULL
FROM chain, json_each(chain.channel_versions) AS v
JOIN {p}blobs bl ON bl.thread_id = ?1 AND bl.checkpoint_ns = ?2 AND bl.channel = v.key
    AND bl.version = v.value
WHERE v.key IN (SELECT value FROM json_each(?4)) AND bl.blob IS NOT NULL
UNION ALL
SELECT chain.depth, chain.checkpoint_id, 'write', w.task_id, w.channel, w.idx, w.type, w.blob,
    w.task_path
FROM chain JOIN {p}writes w ON w.thread_id = ?1 AND w.checkpoint_ns = ?2
    AND w.checkpoint_id = chain.checkpoint_id
WHERE w.channel IN (SELECT value FROM json_each(?4))
ORDER BY 1
"""


class SqliteReads(SqliteConnection):
    """``get_tuple``, ``list`` and ``get_delta_channel_history``, each in one read transaction."""

    def _load_row(
        self, conn: sqlite3.Connection, r: sqlite3.Row | tuple[Any, ...]
    ) -> CheckpointRow:
        tid, ns, cid, parent, btype, body, mtype, meta, versions = r
        blobs = conn.execute(self._sql(SELECT_BLOBS_SQL), (versions, tid, ns)).fetchall()
        writes = conn.execute(self._sql(SELECT_WRITES_SQL), (tid, ns, cid)).fetchall()
        return CheckpointRow(
            thread_id=tid,
            checkpoint_ns=ns,
            checkpoint_id=cid,
            parent_id=parent,
            body=(btype, body),
            metadata=(mtype, meta),
            blobs=[(ch, typ, data) for ch, typ, data in blobs],
            writes=[WriteRecord(t, i, ch, typ, data, path) for t, i, ch, typ, data, path in writes],
            versions=json.loads(versions),
        )

    async def get_checkpoint(
        self, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None
    ) -> CheckpointRow | None:
        select = self._sql(SELECT_CHECKPOINT_SQL)
        if checkpoint_id is None:
            sql = select + (
                "WHERE thread_id = ? AND checkpoint_ns = ? ORDER BY checkpoint_id DESC LIMIT 1"
            )
            args: tuple[Any, ...] = (thread_id, checkpoint_ns)
        else:
            sql = select + "WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?"
            args = (thread_id, checkpoint_ns, checkpoint_id)

        def get(conn: sqlite3.Connection) -> CheckpointRow | None:
            row = conn.execute(sql, args).fetchone()
            return None if row is None else self._load_row(conn, row)

        return await self._read(get)

    async def list_page(
        self, query: ListQuery, after: tuple[str, str, str] | None, size: int
    ) -> list[CheckpointRow]:
        where: list[str] = []
        args: list[Any] = []
        for clause, value in (
            ("thread_id = ?", query.thread_id),
            ("checkpoint_ns = ?", query.checkpoint_ns),
            ("checkpoint_id = ?", query.checkpoint_id),
            ("checkpoint_id < ?", query.before_id),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        if after is not None:
            where.append("(checkpoint_id, thread_id, checkpoint_ns) < (?, ?, ?)")
            args.extend(after)
        sql = self._sql(SELECT_CHECKPOINT_SQL)
        if where:
            sql += "WHERE " + " AND ".join(where)
        sql += " ORDER BY checkpoint_id DESC, thread_id DESC, checkpoint_ns DESC LIMIT ?"
        args.append(size)

        def page(conn: sqlite3.Connection) -> list[CheckpointRow]:
            return [self._load_row(conn, r) for r in conn.execute(sql, args).fetchall()]

        return await self._read(page)

    async def parent_chain(
        self,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str | None,
        channels: Sequence[str],
    ) -> list[ChainLink]:
        sql = self._sql(PARENT_CHAIN_SQL)
        args = (thread_id, checkpoint_ns, checkpoint_id, json.dumps(list(channels)))

        def walk(conn: sqlite3.Connection) -> list[ChainLink]:
            links: dict[int, ChainLink] = {}
            for depth, cid, kind, task, channel, idx, typ, data, path in conn.execute(sql, args):
                link = links.setdefault(depth, ChainLink(cid, {}, []))
                if kind == "seed":
                    link.seeds[channel] = (typ, data)
                elif kind == "write":
                    link.writes.append(WriteRecord(task, idx, channel, typ, data, path))
            return [links[depth] for depth in sorted(links)]

        return await self._read(walk)
