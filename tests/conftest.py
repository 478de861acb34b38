"""Shared fixtures: real Postgres and Redis on loopback, one isolated table prefix per test."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio

from langgraph_resilient import ResilientSaver
from tests.servers import RedisClusterServers, RedisSentinelServers, RedisServer, running

POSTGRES_URL = os.environ.get("LGR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("LGR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

BACKENDS = ["postgres", "sqlite", "tiered"]
"""``tiered`` is Postgres with the Redis tier and the in-process cache in front of it."""


def unique_prefix() -> str:
    """A table/key prefix no other test uses, so tests never see each other's rows."""
    return f"t{uuid.uuid4().hex[:10]}_"


async def drop_prefixed_tables(url: str, prefix: str) -> None:
    """Drop every table whose name starts with ``prefix`` (the test's own schema)."""
    conn = await asyncpg.connect(url)
    try:
        names = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "AND starts_with(tablename, $1)",
            prefix,
        )
        for row in names:
            await conn.execute(f'DROP TABLE IF EXISTS "{row["tablename"]}" CASCADE')
    finally:
        await conn.close()


async def drop_prefixed_keys(url: str, prefix: str) -> None:
    """Delete every Redis key under ``prefix`` (the test's own keys)."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


async def drop_backend(backend: str, prefix: str) -> None:
    """Drop what a test wrote under ``prefix`` on ``backend`` (SQLite files go with tmp_path)."""
    if backend != "sqlite":
        await drop_prefixed_tables(POSTGRES_URL, prefix)
    if backend == "tiered":
        await drop_prefixed_keys(REDIS_URL, prefix)


def backend_kwargs(backend: str, sqlite_path: Path) -> dict[str, Any]:
    """``ResilientSaver.from_urls`` arguments that put a saver on ``backend``."""
    if backend == "sqlite":
        return {"sqlite_path": str(sqlite_path)}
    if backend == "tiered":
        return {"postgres_url": POSTGRES_URL, "redis_url": REDIS_URL}
    return {"postgres_url": POSTGRES_URL}


SaverFactory = Callable[..., Awaitable[ResilientSaver]]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_saver(backend: str, tmp_path: Path) -> AsyncIterator[SaverFactory]:
    """Returns ``await make_saver(**kwargs)``: an entered async saver on the test's backend.

    Every saver the factory makes in one test shares that test's prefix (Postgres) or file
    (SQLite), so a second saver sees what the first wrote, like a second replica would.
    Everything is closed and dropped when the test ends.
    """
    prefix = unique_prefix()
    sqlite_path = tmp_path / "state.db"
    opened: list[ResilientSaver] = []

    async def factory(**kwargs: Any) -> ResilientSaver:
        kwargs = {"prefix": prefix, **backend_kwargs(backend, sqlite_path), **kwargs}
        saver = ResilientSaver.from_urls(**kwargs)
        await saver.__aenter__()
        opened.append(saver)
        return saver

    try:
        yield factory
    finally:
        for saver in reversed(opened):
            await saver.__aexit__(None, None, None)
        await drop_backend(backend, prefix)


@pytest.fixture
async def saver(make_saver: SaverFactory) -> ResilientSaver:
    """One entered async saver on the test's backend (both backends, by parametrization)."""
    return await make_saver()


@pytest.fixture
def sync_prefix(backend: str) -> Iterator[str]:
    """A prefix of the test's own for savers it builds itself (sync tests), dropped after."""
    prefix = unique_prefix()
    try:
        yield prefix
    finally:
        asyncio.run(drop_backend(backend, prefix))


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A table prefix of the test's own on the shared Postgres, dropped after."""
    value = unique_prefix()
    try:
        yield value
    finally:
        await drop_prefixed_tables(POSTGRES_URL, value)


@pytest.fixture
def fresh_redis() -> Iterator[RedisServer]:
    """A private Redis the test may stop, restart (empty) and freeze."""
    yield from running(RedisServer())


@pytest.fixture
def sentinel() -> Iterator[RedisSentinelServers]:
    """A private master with three sentinels watching it as ``mymaster``."""
    yield from running(RedisSentinelServers("mymaster"))


@pytest.fixture
def cluster() -> Iterator[RedisClusterServers]:
    """A private 3-node Redis Cluster."""
    yield from running(RedisClusterServers(3))
