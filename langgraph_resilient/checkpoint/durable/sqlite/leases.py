"""The embedded durable tier, one SQLite file with no server: the fallback thread lease.

One connection lives on one dedicated thread, so every statement runs in order and the event
loop never blocks on disk. WAL mode lets other processes read while this one writes; writes
from several processes wait for each other (``busy_timeout``). Each operation runs in one
transaction (``BEGIN IMMEDIATE`` for writes, so a retry never sees half of it). The schema and
every rule are the Postgres store's (``durable/postgres/``), written for SQLite.
"""

from __future__ import annotations

import sqlite3
import time

from langgraph_resilient.checkpoint.durable.sqlite.connection import SqliteConnection
from langgraph_resilient.checkpoint.durable.sqlite.writes import READ_EPOCH_SQL
from langgraph_resilient.checkpoint.durable.store import EpochRaise
from langgraph_resilient.checkpoint.fencing import fallback_epoch

# The fallback thread lease in the `threads` row (token + expiry next to the fencing epoch),
# with the same rules as the Postgres statements, each run in one BEGIN IMMEDIATE
# transaction: the write lock serializes it with every fenced write to the file. Expiry is
# wall-clock time of this machine (every process sharing the file runs on it).
LEASE_READ_SQL = "SELECT epoch, lease_token, lease_expires_at FROM {p}threads WHERE thread_id = ?"
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


class SqliteLeases(SqliteConnection):
    """The lease row of a thread (see docs/lease.md): used when Redis is down or absent.
    Expiry is judged by this machine's clock, which every process on it shares."""

    def _lease_row(
        self, conn: sqlite3.Connection, thread_id: str
    ) -> tuple[int, str | None, float | None] | None:
        row = conn.execute(self._sql(LEASE_READ_SQL), (thread_id,)).fetchone()
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
            conn.execute(self._sql(LEASE_WRITE_SQL), (thread_id, epoch, token, now + ttl_s, now))
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
            conn.execute(self._sql(LEASE_WRITE_SQL), (thread_id, epoch, token, now + ttl_s, now))
            return True

        return await self._write(hold)

    async def lease_release(self, thread_id: str, token: str) -> None:
        sql = self._sql(LEASE_RELEASE_SQL)
        await self._write(lambda conn: conn.execute(sql, (thread_id, token, time.time())) and None)

    async def lease_raise(self, thread_id: str, floor: int, token: str) -> EpochRaise:
        def bump(conn: sqlite3.Connection) -> EpochRaise:
            now = time.time()
            row = self._lease_row(conn, thread_id)
            if row is None:
                conn.execute(self._sql(LEASE_WRITE_SQL), (thread_id, floor, None, None, now))
                return EpochRaise(True, False, 0)
            current, holder, expires = row
            if self._held_by_other(token, holder, expires, now):
                return EpochRaise(False, True, current)
            if current >= floor:
                return EpochRaise(False, False, current)
            conn.execute(self._sql(LEASE_WRITE_SQL), (thread_id, floor, holder, expires, now))
            return EpochRaise(True, False, current)

        return await self._write(bump)

    async def thread_epoch(self, thread_id: str) -> int:
        sql = self._sql(READ_EPOCH_SQL)
        return await self._read(
            lambda conn: int((conn.execute(sql, (thread_id,)).fetchone() or (0,))[0])
        )
