"""When Postgres is down, writes fail with a clear error after a bounded retry and nothing is
reported as stored; when it is back, the same saver works again. The server really stops."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from langgraph_resilient import DurableWriteError, ResilientSaver, TierUnavailableError
from tests.servers import PostgresServer

pytestmark = pytest.mark.fault


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.destroy()


def _checkpoint(i: int) -> dict[str, object]:
    cp = dict(empty_checkpoint())
    cp["channel_values"] = {"i": i}
    cp["channel_versions"] = {"i": str(i)}
    return cp


async def test_writes_fail_clearly_while_postgres_is_down_and_recover(
    postgres: PostgresServer,
) -> None:
    config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    async with ResilientSaver.from_urls(
        postgres_url=postgres.url,
        write_attempts=3,
        write_retry_deadline_s=2.0,
        connect_timeout_s=1.0,
        command_timeout_s=2.0,
    ) as saver:
        first = await saver.aput(config, _checkpoint(1), {}, {"i": "1"})  # type: ignore[arg-type]

        postgres.stop()
        started = time.monotonic()
        with pytest.raises(DurableWriteError, match=r"^postgres: put failed after \d attempt"):
            await saver.aput(first, _checkpoint(2), {}, {"i": "2"})  # type: ignore[arg-type]
        with pytest.raises(DurableWriteError, match="put_writes"):
            await saver.aput_writes(first, [("i", 5)], "task")
        with pytest.raises(TierUnavailableError, match="get_tuple"):
            await saver.aget_tuple(config)  # type: ignore[arg-type]
        assert time.monotonic() - started < 20, "the retry is bounded"

        postgres.start()
        head = await saver.aget_tuple(config)  # type: ignore[arg-type]
        assert head is not None
        assert head.checkpoint["channel_values"] == {"i": 1}, "the failed put stored nothing"
        assert head.pending_writes == []
        second = await saver.aput(first, _checkpoint(2), {}, {"i": "2"})  # type: ignore[arg-type]
        head = await saver.aget_tuple(config)  # type: ignore[arg-type]
        assert head is not None and head.config == second


async def test_database_errors_that_are_not_connection_failures_are_typed_too(
    prefix: str,
) -> None:
    """An error Postgres raises for another reason than a lost connection (here a table an
    operator dropped under the saver) reaches the caller as the saver's typed error, with the
    driver's error as its cause: writes, reads and the lease alike."""
    import asyncpg

    from tests.conftest import POSTGRES_URL

    config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    async with ResilientSaver.from_urls(postgres_url=POSTGRES_URL, prefix=prefix) as saver:
        stored = await saver.aput(config, _checkpoint(1), {}, {"i": "1"})  # type: ignore[arg-type]
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            for table in ("writes", "checkpoints", "threads"):
                await conn.execute(f"DROP TABLE {prefix}{table} CASCADE")
        finally:
            await conn.close()
        with pytest.raises(DurableWriteError, match="put_writes failed: UndefinedTableError"):
            await saver.aput_writes(stored, [("i", 5)], "task")
        with pytest.raises(TierUnavailableError) as read:
            await saver.aget_tuple(config)  # type: ignore[arg-type]
        with pytest.raises(TierUnavailableError) as lease:
            async with saver.lock_thread("t"):
                pass
        for raised in (read, lease):
            assert isinstance(raised.value.__cause__, asyncpg.exceptions.UndefinedTableError)


def test_a_server_still_starting_up_is_a_connection_failure_worth_a_retry() -> None:
    """asyncpg raises InternalClientError when a restarting server answers a new connection
    unexpectedly (seen in 2 of 6 kill-and-restart runs); the saver retries it."""
    import asyncpg

    from langgraph_resilient.checkpoint.durable.postgres import PostgresStore
    from langgraph_resilient.checkpoint.settings import PostgresSettings

    store = PostgresStore(PostgresSettings(url="postgresql://h/db"), prefix="p_")
    assert store.is_transient(asyncpg.exceptions.InternalClientError("protocol state"))
