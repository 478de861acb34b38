"""Fixtures for the node cache tests: TieredCaches on the shared Redis (or a private one), each
test under a key prefix of its own that is deleted afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from langgraph_resilient import TieredCache
from langgraph_resilient._redis.breaker import TierBreaker
from tests.conftest import REDIS_URL, drop_prefixed_keys, unique_prefix

CacheFactory = Callable[..., TieredCache[Any]]


@pytest.fixture
def cache_prefix() -> Iterator[str]:
    """A Redis key prefix of the test's own on the shared Redis, deleted after."""
    prefix = unique_prefix()
    try:
        yield prefix
    finally:
        asyncio.run(drop_prefixed_keys(REDIS_URL, prefix))


@pytest.fixture
def make_tiered(cache_prefix: str) -> Iterator[CacheFactory]:
    """``make_tiered(url=REDIS_URL, **from_url_kwargs)``: an entered (``with``) TieredCache
    under the test's prefix; caches made in one test share Redis like two replicas. A short
    breaker open time (0.2 s) keeps the fault tests quick. All are closed afterwards."""
    opened: list[TieredCache[Any]] = []

    def factory(url: str | None = REDIS_URL, **kwargs: Any) -> TieredCache[Any]:
        kwargs.setdefault("prefix", cache_prefix)
        cache = TieredCache.from_url(url, **kwargs)
        cache.breaker = TierBreaker(open_for_s=0.2)
        cache.__enter__()
        opened.append(cache)
        return cache

    try:
        yield factory
    finally:
        for cache in reversed(opened):
            cache.__exit__(None, None, None)
