"""The embedded durable tier: one SQLite file, no server.

One connection lives on one dedicated thread, so every statement runs in order and the event
loop never blocks on disk. WAL mode lets other processes read while this one writes; writes
from several processes wait for each other (``busy_timeout``). Each operation runs in one
transaction (``BEGIN IMMEDIATE`` for writes, so a retry never sees half of it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from langgraph_resilient._aio import STOP_TIMEOUT_S
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
from langgraph_resilient.checkpoint.store import (
    EpochRaise,
    Skeleton,
    check_fence,
    check_head,
    fallback_epoch,
)
from langgraph_resilient.errors import ConfigurationError, TierUnavailableError

T = TypeVar("T")
log = logging.getLogger("langgraph_resilient.sqlite")

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
UPSERT_WRITE_SQL = """
INSERT INTO {p}writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx,
    channel, type, blob)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE
    SET channel = excluded.channel, type = excluded.type, blob = excluded.blob,
        task_path = excluded.task_path
    WHERE {p}writes.idx < 0
"""

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

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


class SqliteStore:
    """The durable tier in one SQLite file (``ResilientSaver.from_urls(sqlite_path=...)``)."""

    tier = "sqlite"
    write_parallelism = 1
    """One writer at a time: SQLite serializes writes anyway, and waiting writes then share the
    next transaction."""

    def __init__(
        self,
        path: str,
        *,
        prefix: str,
        synchronous: str = "FULL",
        busy_timeout_s: float = 30.0,
    ) -> None:
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ConfigurationError(f"sqlite_synchronous must be one of {_SYNCHRONOUS}")
        self.path = path
        self.prefix = prefix
        self.synchronous = synchronous.upper()
        self.busy_timeout_ms = int(busy_timeout_s * 1000)
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    def _sql(self, template: str) -> str:
        return template.format(p=self.prefix)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._executor is None or self._conn is None:
            raise TierUnavailableError(self.tier, "the database is closed (enter the saver)")
        conn = self._conn
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, conn)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` inside one immediate (write-locking) transaction."""

        def tx(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await self._run(tx)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` inside one read transaction (a consistent snapshot)."""

        def tx(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")

        return await self._run(tx)

    # ---------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lgr-sqlite")

        def connect() -> sqlite3.Connection:
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=0
            )
            conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
            # Switching a new file to WAL needs an exclusive lock, and SQLite reports a busy
            # database at once there instead of waiting (many processes opening one new file):
            # retry within the busy timeout.
            deadline = time.monotonic() + self.busy_timeout_ms / 1000
            while True:
                try:
                    conn.execute("PRAGMA journal_mode = WAL")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        conn.close()
                        raise
                    time.sleep(0.01)
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            return conn

        try:
            self._conn = await asyncio.get_running_loop().run_in_executor(self._executor, connect)
        except (sqlite3.Error, OSError) as exc:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise TierUnavailableError(self.tier, f"cannot open {self.path!r}: {exc}") from exc

    async def close(self) -> None:
        conn, executor = self._conn, self._executor
        if conn is None or executor is None:
            return
        self._conn, self._executor = None, None
        try:
            # After the statements queued before it; bounded, since one may wait for another
            # process's write lock for up to busy_timeout.
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        except TimeoutError:
            log.error(
                "closing %s took over %.0f s; its thread is abandoned", self.path, STOP_TIMEOUT_S
            )
        executor.shutdown(wait=False)

    def is_transient(self, exc: BaseException) -> bool:
        # "database is locked" after busy_timeout: another process holds the write lock.
        return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)

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
                check_version(self.tier, current)
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in self._sql(MIGRATIONS[version - 1]).split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(self._sql(WRITE_VERSION_SQL), (version, time.time()))
            return SCHEMA_VERSION

        if await self.schema_version() == SCHEMA_VERSION:
            return SCHEMA_VERSION
        return await self._write(apply)

    # ---------------------------------------------------------------- writes

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

    # ---------------------------------------------------------------- reads

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

    # ---------------------------------------------------------------- maintenance

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

    # ---- leases
    # The fallback thread lease in the `threads` row (token + expiry next to the fencing epoch),
    # with the same rules as the Postgres statements, each run in one BEGIN IMMEDIATE
    # transaction: the write lock serializes it with every fenced write to the file. Expiry is
    # wall-clock time of this machine (every process sharing the file runs on it).
    LEASE_READ_SQL = (
        "SELECT epoch, lease_token, lease_expires_at FROM {p}threads WHERE thread_id = ?"
    )
    LEASE_WRITE_SQL = """
    INSERT INTO {p}threads (thread_id, epoch, lease_token, lease_expires_at, updated_at)
    VALUES (?1, ?2, ?3, ?4, ?5)
    ON CONFLICT (thread_id) DO UPDATE SET epoch = excluded.epoch,
        lease_token = excluded.lease_token, lease_expires_at = excluded.lease_expires_at,
        updated_at = excluded.updated_at
    """
    LEASE_RELEASE_SQL = """
    UPDATE {p}threads SET lease_token = NULL, lease_expires_at = NULL, updated_at = ?3
    WHERE thread_id = ?1 AND lease_token = ?2
    """

    def _lease_row(
        self, conn: sqlite3.Connection, thread_id: str
    ) -> tuple[int, str | None, float | None] | None:
        row = conn.execute(self._sql(self.LEASE_READ_SQL), (thread_id,)).fetchone()
        return None if row is None else (int(row[0]), row[1], row[2])

    @staticmethod
    def _held_by_other(token: str, holder: str | None, expires: float | None, now: float) -> bool:
        return holder is not None and holder != token and expires is not None and expires > now

    async def lease_acquire(self, thread_id: str, token: str, ttl_s: float) -> int | None:
        def take(conn: sqlite3.Connection) -> int | None:
            now = time.time()
            row = self._lease_row(conn, thread_id)
            if row is not None and self._held_by_other(token, row[1], row[2], now):
                return None
            epoch = fallback_epoch(row[0]) if row is not None else 1
            conn.execute(
                self._sql(self.LEASE_WRITE_SQL), (thread_id, epoch, token, now + ttl_s, now)
            )
            return epoch

        return await self._write(take)

    async def lease_hold(self, thread_id: str, token: str, epoch: int, ttl_s: float) -> bool:
        def hold(conn: sqlite3.Connection) -> bool:
            now = time.time()
            row = self._lease_row(conn, thread_id)
            if row is not None and (
                row[0] > epoch or self._held_by_other(token, row[1], row[2], now)
            ):
                return False
            conn.execute(
                self._sql(self.LEASE_WRITE_SQL), (thread_id, epoch, token, now + ttl_s, now)
            )
            return True

        return await self._write(hold)

    async def lease_release(self, thread_id: str, token: str) -> None:
        sql = self._sql(self.LEASE_RELEASE_SQL)
        await self._write(lambda conn: conn.execute(sql, (thread_id, token, time.time())) and None)

    async def lease_raise(self, thread_id: str, floor: int, token: str) -> EpochRaise:
        def bump(conn: sqlite3.Connection) -> EpochRaise:
            now = time.time()
            row = self._lease_row(conn, thread_id)
            if row is None:
                conn.execute(self._sql(self.LEASE_WRITE_SQL), (thread_id, floor, None, None, now))
                return EpochRaise(True, False, 0)
            current, holder, expires = row
            if self._held_by_other(token, holder, expires, now):
                return EpochRaise(False, True, current)
            if current >= floor:
                return EpochRaise(False, False, current)
            conn.execute(self._sql(self.LEASE_WRITE_SQL), (thread_id, floor, holder, expires, now))
            return EpochRaise(True, False, current)

        return await self._write(bump)

    async def thread_epoch(self, thread_id: str) -> int:
        sql = self._sql(READ_EPOCH_SQL)
        return await self._read(
            lambda conn: int((conn.execute(sql, (thread_id,)).fetchone() or (0,))[0])
        )
