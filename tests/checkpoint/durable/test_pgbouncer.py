"""The pgbouncer switch: through pgbouncer in transaction mode, with more clients than server
connections, every operation works because the saver keeps no server-side prepared statement."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest
from langgraph.checkpoint.base import empty_checkpoint

from langgraph_resilient import ResilientSaver, TierUnavailableError
from tests.conftest import POSTGRES_URL, drop_prefixed_tables, unique_prefix
from tests.servers import PgBouncer


@pytest.fixture
def bouncer() -> Iterator[PgBouncer]:
    server = PgBouncer(upstream_port=5432, database="test")
    try:
        yield server
    finally:
        server.stop()


async def _exercise(saver: ResilientSaver, n: int) -> None:
    async def one(i: int) -> None:
        config = {"configurable": {"thread_id": f"t{i % 7}", "checkpoint_ns": ""}}
        cp = dict(empty_checkpoint())
        cp["channel_values"] = {"v": i}
        cp["channel_versions"] = {"v": saver.get_next_version(None, None)}
        stored = await saver.aput(config, cp, {"step": i}, cp["channel_versions"])  # type: ignore[arg-type]
        await saver.aput_writes(stored, [("v", i)], f"task{i}")
        tup = await saver.aget_tuple(stored)
        assert tup is not None and tup.checkpoint["channel_values"] == {"v": i}
        assert [t async for t in saver.alist(config, filter={"step": i})]

    await asyncio.gather(*(one(i) for i in range(n)))


async def test_pgbouncer_transaction_mode_works_with_the_switch(bouncer: PgBouncer) -> None:
    prefix = unique_prefix()
    try:
        async with ResilientSaver.from_urls(
            postgres_url=bouncer.url, prefix=prefix, pgbouncer=True, pool_max_size=8
        ) as saver:
            await _exercise(saver, 60)
            assert len([t async for t in saver.alist(None)]) == 60
    finally:
        await drop_prefixed_tables(POSTGRES_URL, prefix)


async def test_without_the_switch_prepared_statements_break_behind_pgbouncer(
    bouncer: PgBouncer,
) -> None:
    """The control: the same workload with statement caching fails, so the test above proves
    the switch, not luck. The failure reaches the caller as the saver's typed error, caused by
    Postgres refusing the prepared statement."""
    prefix = unique_prefix()
    try:
        async with ResilientSaver.from_urls(
            postgres_url=bouncer.url, prefix=prefix, pgbouncer=False, pool_max_size=8
        ) as saver:
            with pytest.raises(TierUnavailableError) as failed:
                for _ in range(3):
                    await _exercise(saver, 60)
            assert isinstance(failed.value.__cause__, asyncpg.exceptions.PostgresError)
    finally:
        await drop_prefixed_tables(POSTGRES_URL, prefix)
