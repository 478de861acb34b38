"""ResiliencePolicy itself: guard forms, replace(), validation, and the event bus."""

from __future__ import annotations

import logging

import pytest

from langgraph_resilient import (
    Bulkhead,
    CircuitBreaker,
    ConfigurationError,
    EventBus,
    EventKind,
    ManualClock,
    ResilienceEvent,
    ResiliencePolicy,
    Retry,
    Timeout,
)
from tests.runtime.conftest import Recorder


def test_guard_forms_keep_the_function_identity(
    clock: ManualClock, name: str, bus: EventBus, recorder: Recorder
) -> None:
    policy = ResiliencePolicy(retry=Retry(2, clock=clock, name=name), events=bus)

    @policy.guard
    def plain(x: int) -> int:
        """Doubles."""
        return x * 2

    @policy.guard(name="llm.complete")
    async def named(x: int) -> int:
        return x + 1

    assert plain(2) == 4
    assert plain.__name__ == "plain" and plain.__doc__ == "Doubles."
    assert named.__name__ == "named"
    assert recorder.of(EventKind.CALL)[0].source.endswith("plain")


async def test_guarded_coroutine_is_a_coroutine(bus: EventBus, recorder: Recorder) -> None:
    import inspect

    @ResiliencePolicy(timeout=Timeout(1), events=bus).guard(name="llm.complete")
    async def complete(prompt: str) -> str:
        return prompt.upper()

    assert inspect.iscoroutinefunction(complete)
    assert await complete("hi") == "HI"
    (call,) = recorder.of(EventKind.CALL)
    assert call.source == "llm.complete" and call.detail["outcome"] == "success"


def test_an_empty_policy_adds_nothing() -> None:
    def fn() -> str:
        return "x"

    assert ResiliencePolicy().guard(fn)() == "x"


def test_replace_and_validation(name: str) -> None:
    policy = ResiliencePolicy(retry=Retry(2, name=name), bulkhead=Bulkhead(1))
    changed = policy.replace(retry=None, timeout=3)
    assert changed.retry is None and changed.bulkhead is policy.bulkhead
    assert changed.timeout is not None and changed.timeout.seconds == 3
    assert "bulkhead" in repr(changed)
    with pytest.raises(ConfigurationError, match="no"):
        policy.replace(retries=3)
    with pytest.raises(ConfigurationError):
        ResiliencePolicy(retry=3)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        ResiliencePolicy(breaker="llm")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        ResiliencePolicy(bulkhead=4)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        ResiliencePolicy(feature="")


def test_event_bus_subscribers(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    assert not bus.active
    seen: list[ResilienceEvent] = []

    def broken(event: ResilienceEvent) -> None:
        raise RuntimeError("subscriber bug")

    unsubscribe_broken = bus.subscribe(broken)
    unsubscribe = bus.subscribe(seen.append)
    assert bus.active
    with caplog.at_level(logging.ERROR):
        bus.publish(EventKind.RETRY, "node", attempt=1)
    assert [e.detail for e in seen] == [{"attempt": 1}]
    assert "subscriber bug" in caplog.text
    unsubscribe_broken()
    unsubscribe()
    unsubscribe()  # twice is harmless
    assert not bus.active
    bus.publish(EventKind.RETRY, "node", attempt=2)
    assert len(seen) == 1
    assert EventBus.default() is EventBus.default()


def test_breaker_events_default_to_the_process_bus() -> None:
    seen: list[ResilienceEvent] = []
    unsubscribe = EventBus.default().subscribe(seen.append)
    try:
        breaker = CircuitBreaker("default-bus", minimum_calls=1, window_size=1)
        breaker.on_failure(breaker.acquire(), ConnectionError(), 0.0)
    finally:
        unsubscribe()
    assert any(e.kind is EventKind.BREAKER_STATE and e.source == "default-bus" for e in seen)
