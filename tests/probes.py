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


class RedisWire:
    """A loopback TCP proxy in front of a Redis server that counts round trips: each burst of
    bytes a client sends is one (the saver writes each pipeline in one piece). Point the saver
    at ``url``; meant for sequential tests (two concurrent pipelines may arrive as one burst)."""

    def __init__(self, target_url: str) -> None:
        host_port = target_url.split("://", 1)[1].split("/", 1)[0]
        host, _, port = host_port.rpartition(":")
        self._target = (host, int(port))
        self._bursts = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    async def __aenter__(self) -> RedisWire:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"redis://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def take(self) -> int:
        """Round trips since the last call."""
        taken, self._bursts = self._bursts, 0
        return taken

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool) -> None:
            try:
                while data := await src.read(1 << 20):
                    if count:
                        self._bursts += 1
                    dst.write(data)
                    await dst.drain()
            finally:
                dst.close()

        for task in (
            asyncio.create_task(pump(reader, up_writer, True)),
            asyncio.create_task(pump(up_reader, writer, False)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
