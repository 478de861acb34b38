"""Counting what the saver sends on the wire: Postgres statements and Redis requests.

Round-trip claims (a warm head read costs one Redis round trip and no Postgres one, a put one
statement...) are checked by watching real connections, not by counting calls in Python.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio

from langgraph_resilient import ResilientSaver


async def log_postgres_statements(saver: ResilientSaver) -> list[str]:
    """From now on, every statement the saver's Postgres connections send is appended to the
    returned list: its pool's connection (open the saver with ``pool_max_size=2``, so the pool
    has one) and its group-commit writers. asyncpg calls query loggers on the next loop turn:
    sleep a moment before reading the list."""
    statements: list[str] = []
    store: Any = saver.store

    def log(record: Any) -> None:
        statements.append(record.query)

    async with store.pool.acquire() as conn:  # the pool's one connection, kept across acquires
        conn.add_query_logger(log)
    for conn in store.writer_connections():
        conn.add_query_logger(log)
    return statements


class RedisRequests:
    """Counts the requests Redis receives from clients (MONITOR, not counting Lua's own calls)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.commands: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RedisRequests:
        client = redis.asyncio.Redis.from_url(self.url)
        ready = asyncio.Event()

        async def listen() -> None:
            async with client.monitor() as monitor:
                ready.set()
                async for event in monitor.listen():
                    if event.get("client_type") != "lua" and "lua" not in str(
                        event.get("client_address", "")
                    ):
                        self.commands.append(str(event["command"]).split()[0].upper())

        self._task = asyncio.create_task(listen())
        await ready.wait()
        await asyncio.sleep(0.05)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0.05)
        assert self._task is not None
        self._task.cancel()

    def take(self) -> list[str]:
        """The requests counted since the last call."""
        taken, self.commands = self.commands, []
        return taken
