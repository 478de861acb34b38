"""A Postgres killed and restarted under load: every failure a graph sees is a typed error.

Graphs run turns without pause while the server is stopped (immediate shutdown, as a crash)
and started again several times. The connection errors asyncpg raises meanwhile vary with the
moment of the kill (a refused connection, a reset, a server still starting up...); the saver
retries them a bounded number of times and reports each failure as ``DurableWriteError`` or
``TierUnavailableError``, never as a driver's own exception. Once the server is back, every
graph works again and its state holds exactly the turns that were acknowledged.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from typing import Any

import pytest

from langgraph_resilient import ResilientError, ResilientSaver
from tests.graphs import chain
from tests.servers import PostgresServer

pytestmark = pytest.mark.fault

WORKERS = 6
RESTARTS = 4


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.destroy()


async def test_graphs_see_only_typed_errors_while_postgres_restarts(
    postgres: PostgresServer,
) -> None:
    seen: collections.Counter[str] = collections.Counter()
    untyped: list[BaseException] = []
    stop = asyncio.Event()

    async with ResilientSaver.from_urls(
        postgres_url=postgres.url,
        write_attempts=2,
        write_retry_deadline_s=0.5,
        connect_timeout_s=0.5,
        command_timeout_s=2.0,
        pool_max_size=8,
    ) as saver:
        graph = chain("first", "second").compile(checkpointer=saver)

        async def worker(i: int) -> int:
            config: Any = {"configurable": {"thread_id": f"w{i}"}}
            acknowledged = 0
            while not stop.is_set():
                try:
                    await graph.ainvoke({"log": []}, config)
                    acknowledged += 1
                except ResilientError as exc:
                    seen[type(exc).__name__] += 1
                    await asyncio.sleep(0.01)
                except Exception as exc:
                    seen[type(exc).__name__] += 1
                    untyped.append(exc)
                    await asyncio.sleep(0.01)
            return acknowledged

        tasks = [asyncio.create_task(worker(i)) for i in range(WORKERS)]
        loop = asyncio.get_running_loop()
        for _ in range(RESTARTS):
            await asyncio.sleep(0.6)
            await loop.run_in_executor(None, postgres.stop)
            await asyncio.sleep(0.3)
            await loop.run_in_executor(None, postgres.start)
        await asyncio.sleep(1.0)
        stop.set()
        async with asyncio.timeout(60):
            counts = await asyncio.gather(*tasks)

        assert not untyped, f"untyped errors reached the graphs: {seen} {untyped[:3]!r}"
        assert sum(seen.values()) > 0, "the restarts were noticed"
        assert set(seen) <= {"DurableWriteError", "TierUnavailableError"}, seen
        # Back to normal: every thread takes a turn, and no acknowledged turn was lost (a turn
        # that failed may still have stored its last step, so it may count too).
        failures = sum(seen.values())
        for i, acknowledged in enumerate(counts):
            config: Any = {"configurable": {"thread_id": f"w{i}"}}
            await graph.ainvoke({"log": []}, config)
            turns = (await graph.aget_state(config)).values["log"].count("second")
            assert acknowledged + 1 <= turns <= acknowledged + 1 + failures
