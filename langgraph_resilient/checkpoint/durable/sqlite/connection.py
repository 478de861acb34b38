"""The embedded durable tier, one SQLite file with no server: its connection and transactions.

One connection lives on one dedicated thread, so every statement runs in order and the event
loop never blocks on disk. WAL mode lets other processes read while this one writes; writes
from several processes wait for each other (``busy_timeout``). Each operation runs in one
transaction (``BEGIN IMMEDIATE`` for writes, so a retry never sees half of it). The schema and
every rule are the Postgres store's (``durable/postgres/``), written for SQLite.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from langgraph_resilient._aio import STOP_TIMEOUT_S
from langgraph_resilient.checkpoint.settings import SqliteSettings
from langgraph_resilient.errors import TierUnavailableError

T = TypeVar("T")
log = logging.getLogger("langgraph_resilient.sqlite")


class SqliteConnection:
    """The store's one connection, on its own thread, and the transactions every part uses."""

    tier_name = "sqlite"
    write_parallelism = 1
    """One writer at a time: SQLite serializes writes anyway, and waiting writes then share the
    next transaction."""

    def __init__(self, settings: SqliteSettings, *, prefix: str) -> None:
        self.settings = settings
        self.path = settings.path
        self.prefix = prefix
        self.synchronous = settings.synchronous.upper()
        self.busy_timeout_ms = int(settings.busy_timeout_s * 1000)
        self._statements: dict[str, str] = {}
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    def _sql(self, template: str) -> str:
        """``template`` with the table prefix (formatted once per store)."""
        sql = self._statements.get(template)
        if sql is None:
            sql = self._statements[template] = template.format(p=self.prefix)
        return sql

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._executor is None or self._conn is None:
            raise TierUnavailableError(self.tier_name, "the database is closed (enter the saver)")
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
            raise TierUnavailableError(self.tier_name, f"cannot open {self.path!r}: {exc}") from exc

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
