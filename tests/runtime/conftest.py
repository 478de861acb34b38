"""Fixtures for the node-middleware tests: an isolated event bus, a manual clock, and a
unique Redis key prefix (cleaned up afterwards) for the shared-breaker tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from langgraph_resilient import EventBus, EventKind, ManualClock, ResilienceEvent
from tests.conftest import REDIS_URL


class Recorder:
    """Collects the events of one bus; ``kinds()`` and ``of(kind)`` for assertions."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.events: list[ResilienceEvent] = []
        self.unsubscribe = bus.subscribe(self.events.append)

    def of(self, kind: EventKind) -> list[ResilienceEvent]:
        return [e for e in self.events if e.kind is kind]

    def kinds(self) -> list[EventKind]:
        return [e.kind for e in self.events]


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
def recorder(bus: EventBus) -> Iterator[Recorder]:
    rec = Recorder(bus)
    yield rec
    rec.unsubscribe()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def name() -> str:
    """A breaker/budget name no other test uses (budgets are shared by name per process)."""
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix for this test only; its keys are deleted afterwards."""
    prefix = f"lgr-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
