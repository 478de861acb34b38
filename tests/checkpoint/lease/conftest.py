"""Fixtures of the lease tests: private Redis servers and raw access to lease state."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from langgraph_resilient import EventBus, ResilienceEvent, ResilientSaver
from tests.servers import RedisServer, free_port, running


@pytest.fixture(params=["postgres", "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    """The durable store (the lease tests choose Redis or not themselves)."""
    return str(request.param)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A private Redis for the module (tests keep apart by their unique prefixes)."""
    yield from running(RedisServer())


@pytest.fixture
def dead_redis_url() -> str:
    """A Redis URL nothing listens on (connections are refused)."""
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture
async def raw_redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def events() -> Iterator[list[ResilienceEvent]]:
    """Every lease event published during the test (``EventKind.LEASE_*``)."""
    seen: list[ResilienceEvent] = []
    remove = EventBus.default().subscribe(
        lambda e: seen.append(e) if e.kind.startswith("lease_") else None
    )
    try:
        yield seen
    finally:
        remove()


def lease_key(saver: ResilientSaver, thread_id: str) -> str:
    return f"{saver.settings.prefix}{{{thread_id}}}:lease"


async def expire_row(saver: ResilientSaver, thread_id: str) -> None:
    """Make the thread's lease row look expired (as if its holder stalled past its ttl)."""
    store: Any = saver.store
    table = f"{saver.settings.prefix}threads"
    if store.tier_name == "postgres":
        await store._pool().execute(
            f"UPDATE {table} SET lease_expires_at = now() - interval '1 second' "
            "WHERE thread_id = $1",
            thread_id,
        )
    else:
        sql = f"UPDATE {table} SET lease_expires_at = ? WHERE thread_id = ?"
        await store._write(lambda conn: conn.execute(sql, (time.time() - 1, thread_id)) and None)


async def row_token(saver: ResilientSaver, thread_id: str) -> str | None:
    store: Any = saver.store
    table = f"{saver.settings.prefix}threads"
    if store.tier_name == "postgres":
        token: str | None = await store._pool().fetchval(
            f"SELECT lease_token FROM {table} WHERE thread_id = $1", thread_id
        )
        return token
    sql = f"SELECT lease_token FROM {table} WHERE thread_id = ?"
    row = await store._read(lambda conn: conn.execute(sql, (thread_id,)).fetchone())
    return None if row is None else row[0]
