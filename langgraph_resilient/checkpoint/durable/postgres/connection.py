"""The Postgres durable tier, on an asyncpg pool:
Connections, the pool and the group-commit writers.

Every hot-path operation is a single statement, so it is its own transaction and costs one
round trip once asyncpg has prepared it. Table names carry the saver's prefix (``{p}`` in the
statements); every primary key starts with ``thread_id`` so the tables shard by thread (Citus)
without redesign. Text keys use the "C" collation so that the database orders ids exactly as
Python does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg

from langgraph_resilient._urls import redact
from langgraph_resilient.checkpoint.settings import PostgresSettings
from langgraph_resilient.errors import TierUnavailableError

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


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset hook that sends nothing.

    asyncpg's default reset sends RESET ALL/UNLISTEN/... on every release: one extra round trip
    per operation. The saver leaves no session state behind (no SET, LISTEN, cursors or session
    advisory locks), and asyncpg still rolls back any transaction left open before this runs.
    """


class PostgresConnection:
    """The connections of a Postgres store and what every statement needs: the pool (reads,
    fenced writes, maintenance), the group-commit writers, and the prefixed statements."""

    tier_name = "postgres"

    def __init__(self, settings: PostgresSettings, *, prefix: str) -> None:
        self.settings = settings
        # Group-committed writes run on their own connections (taking a pool connection costs
        # more than a small statement); the rest of max_size serves reads and fenced writes.
        self.write_parallelism = min(4, max(1, settings.max_size // 3))
        self._writers: asyncio.Queue[asyncpg.Connection | None] | None = None
        self._writer_conns: list[asyncpg.Connection] = []
        self.prefix = prefix
        self.pool: asyncpg.Pool | None = None
        self._statements: dict[str, str] = {}

    def _sql(self, template: str) -> str:
        """``template`` with the table prefix (formatted once per store: the hot path asks for
        the same few statements all the time)."""
        sql = self._statements.get(template)
        if sql is None:
            sql = self._statements[template] = template.format(p=self.prefix)
        return sql

    def _pool(self) -> asyncpg.Pool:
        if self.pool is None:
            raise TierUnavailableError(self.tier_name, "the pool is closed (enter the saver first)")
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
                self.tier_name, f"cannot connect to {redact(s.url)}: {_why_not_connected(exc, s)}"
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
            raise TierUnavailableError(
                self.tier_name, "the store is closed (enter the saver first)"
            )
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
