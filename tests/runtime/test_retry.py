"""Retry: backoff and jitter, retryable errors, Retry-After hints, deadline and budget."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from langgraph.errors import GraphInterrupt

from langgraph_resilient import (
    CircuitOpenError,
    ConfigurationError,
    EventBus,
    EventKind,
    ManualClock,
    NodeTimeoutError,
    ResiliencePolicy,
    Retry,
    RetryBudgetExhaustedError,
    is_transient,
)
from langgraph_resilient.runtime import retry_after_hint
from tests.runtime.conftest import Recorder


class Flaky:
    """Fails ``failures`` times with ``error``, then returns ``"ok"``."""

    def __init__(self, failures: int, error: BaseException | None = None) -> None:
        self.failures = failures
        self.error = error or ConnectionError("down")
        self.calls = 0

    def __call__(self, *args: Any) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


class HttpError(Exception):
    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.response = type("Response", (), {"status_code": status, "headers": headers or {}})()


def guard(retry: Retry, bus: EventBus, fn: Any) -> Any:
    return ResiliencePolicy(retry=retry, events=bus).guard(fn)


def test_exponential_backoff_without_jitter(
    clock: ManualClock, name: str, bus: EventBus, recorder: Recorder
) -> None:
    retry = Retry(4, initial_delay_s=0.2, multiplier=2, jitter="none", clock=clock, name=name)
    flaky = Flaky(3)
    assert guard(retry, bus, flaky)() == "ok"
    assert flaky.calls == 4
    assert clock.sleeps == [0.2, 0.4, 0.8]
    assert [e.detail["attempt"] for e in recorder.of(EventKind.RETRY)] == [1, 2, 3]


def test_backoff_is_capped_by_max_delay(clock: ManualClock, name: str, bus: EventBus) -> None:
    retry = Retry(5, initial_delay_s=1, max_delay_s=2.5, jitter="none", clock=clock, name=name)
    guard(retry, bus, Flaky(4))()
    assert clock.sleeps == [1, 2, 2.5, 2.5]


def test_full_jitter_stays_within_the_backoff(clock: ManualClock, name: str, bus: EventBus) -> None:
    retry = Retry(
        6, initial_delay_s=0.1, jitter="full", clock=clock, name=name, rng=random.Random(7)
    )
    guard(retry, bus, Flaky(5))()
    bases = [0.1, 0.2, 0.4, 0.8, 1.6]
    assert len(clock.sleeps) == 5
    assert all(0 <= slept <= base for slept, base in zip(clock.sleeps, bases, strict=True))
    assert len(set(clock.sleeps)) == 5  # actually random


def test_decorrelated_jitter(clock: ManualClock, name: str, bus: EventBus) -> None:
    retry = Retry(
        8,
        initial_delay_s=0.1,
        max_delay_s=1.0,
        jitter="decorrelated",
        clock=clock,
        name=name,
        rng=random.Random(3),
        budget_capacity=None,
    )
    guard(retry, bus, Flaky(7))()
    previous = 0.1
    for slept in clock.sleeps:
        assert 0.1 <= slept <= min(1.0, max(0.1, previous * 3)) + 1e-12
        previous = slept


def test_non_transient_errors_are_not_retried(
    clock: ManualClock, name: str, bus: EventBus, recorder: Recorder
) -> None:
    flaky = Flaky(1, ValueError("bug"))
    with pytest.raises(ValueError, match="bug"):
        guard(Retry(3, clock=clock, name=name), bus, flaky)()
    assert flaky.calls == 1
    (give_up,) = recorder.of(EventKind.RETRY_GIVE_UP)
    assert give_up.detail["reason"] == "not_retryable"


def test_gives_up_after_max_attempts_with_the_original_error(
    clock: ManualClock, name: str, bus: EventBus, recorder: Recorder
) -> None:
    flaky = Flaky(10)
    with pytest.raises(ConnectionError, match="down"):
        guard(Retry(3, clock=clock, name=name), bus, flaky)()
    assert flaky.calls == 3
    assert recorder.of(EventKind.RETRY_GIVE_UP)[0].detail["reason"] == "max_attempts"


def test_custom_retry_on(clock: ManualClock, name: str, bus: EventBus) -> None:
    flaky = Flaky(2, KeyError("x"))
    assert guard(Retry(3, retry_on=(KeyError,), clock=clock, name=name), bus, flaky)() == "ok"
    flaky = Flaky(2, KeyError("x"))
    predicate = Retry(3, retry_on=lambda e: isinstance(e, KeyError), clock=clock, name=name)
    assert guard(predicate, bus, flaky)() == "ok"


def test_retry_after_hint_is_respected(clock: ManualClock, name: str, bus: EventBus) -> None:
    error = HttpError(429, {"retry-after": "1.5"})
    retry = Retry(2, initial_delay_s=0.1, jitter="none", clock=clock, name=name)
    assert guard(retry, bus, Flaky(1, error))() == "ok"
    assert clock.sleeps == [1.5]


def test_retry_after_longer_than_max_delay_stops(
    clock: ManualClock, name: str, bus: EventBus, recorder: Recorder
) -> None:
    error = HttpError(503, {"Retry-After": "120"})
    with pytest.raises(HttpError):
        guard(Retry(3, max_delay_s=5, clock=clock, name=name), bus, Flaky(1, error))()
    assert recorder.of(EventKind.RETRY_GIVE_UP)[0].detail["reason"] == "hint_too_long"


def test_retry_after_hint_forms() -> None:
    class WithAttr(Exception):
        retry_after = 3

    assert retry_after_hint(WithAttr()) == 3.0
    assert retry_after_hint(HttpError(429, {"retry-after-ms": "250"})) == 0.25
    when = datetime.now(UTC) + timedelta(seconds=30)
    hint = retry_after_hint(HttpError(429, {"retry-after": format_datetime(when, usegmt=True)}))
    assert hint is not None and 25 <= hint <= 31
    assert retry_after_hint(HttpError(429, {"retry-after": "soon"})) is None
    assert retry_after_hint(ValueError()) is None
    assert retry_after_hint(CircuitOpenError("x", 4.0)) == 4.0


def test_deadline_stops_retrying(
    clock: ManualClock, name: str, bus: EventBus, recorder: Recorder
) -> None:
    retry = Retry(
        10, initial_delay_s=0.6, multiplier=1, jitter="none", deadline_s=1.5, clock=clock, name=name
    )
    flaky = Flaky(10)
    with pytest.raises(ConnectionError):
        guard(retry, bus, flaky)()
    assert clock.sleeps == [0.6, 0.6]  # a third wait would end at 1.8s > 1.5s
    assert flaky.calls == 3
    assert recorder.of(EventKind.RETRY_GIVE_UP)[0].detail["reason"] == "deadline"


def test_retry_budget_is_shared_by_name_and_refills(
    clock: ManualClock, name: str, bus: EventBus, recorder: Recorder
) -> None:
    first = Retry(
        5,
        jitter="none",
        clock=clock,
        name=name,
        budget_capacity=2,
        budget_refill_per_s=1.0,
        budget_ratio=0.0,
    )
    second = Retry(
        5,
        jitter="none",
        clock=clock,
        name=name,
        budget_capacity=2,
        budget_refill_per_s=1.0,
        budget_ratio=0.0,
    )
    assert first.budget is second.budget
    assert guard(first, bus, Flaky(2))() == "ok"  # spends both tokens (and 0.6s pass)
    with pytest.raises(RetryBudgetExhaustedError) as info:
        guard(second, bus, Flaky(1))()
    assert isinstance(info.value.__cause__, ConnectionError)
    assert recorder.of(EventKind.RETRY_BUDGET_EXHAUSTED)[0].source == name
    clock.advance(1.0)
    assert guard(second, bus, Flaky(1))() == "ok"


def test_budget_ratio_deposits_per_call(clock: ManualClock, name: str, bus: EventBus) -> None:
    retry = Retry(
        2, clock=clock, name=name, budget_capacity=1, budget_refill_per_s=0, budget_ratio=0.5
    )
    assert retry.budget is not None
    retry.budget.tokens = 0.0
    ok = guard(retry, bus, lambda: "ok")
    ok()
    ok()  # two calls deposit one token
    assert guard(retry, bus, Flaky(1))() == "ok"


def test_budget_name_with_other_settings_is_rejected(clock: ManualClock, name: str) -> None:
    Retry(3, name=name, budget_capacity=5, clock=clock)
    with pytest.raises(ConfigurationError, match="retry budget"):
        Retry(3, name=name, budget_capacity=6, clock=clock)


def test_bubble_up_is_never_retried(clock: ManualClock, name: str, bus: EventBus) -> None:
    flaky = Flaky(1, GraphInterrupt(()))
    with pytest.raises(GraphInterrupt):
        guard(Retry(3, retry_on=lambda e: True, clock=clock, name=name), bus, flaky)()
    assert flaky.calls == 1


async def test_async_retry_and_cancellation(clock: ManualClock, name: str, bus: EventBus) -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise TimeoutError("slow")
        return "ok"

    retry = Retry(3, jitter="none", initial_delay_s=0.5, clock=clock, name=name)
    assert await ResiliencePolicy(retry=retry, events=bus).guard(flaky)() == "ok"
    assert clock.sleeps == [0.5, 1.0]

    cancelled = 0

    async def cancelled_inside() -> None:
        nonlocal cancelled
        cancelled += 1
        raise asyncio.CancelledError

    guarded = ResiliencePolicy(
        retry=Retry(3, retry_on=lambda e: True, clock=clock, name=name), events=bus
    ).guard(cancelled_inside)
    with pytest.raises(asyncio.CancelledError):
        await guarded()
    assert cancelled == 1


def test_is_transient() -> None:
    assert is_transient(ConnectionError())
    assert is_transient(TimeoutError())
    assert is_transient(NodeTimeoutError("x"))
    assert is_transient(HttpError(429))
    assert is_transient(HttpError(503))
    assert not is_transient(HttpError(400))
    assert not is_transient(HttpError(401))
    assert not is_transient(ValueError())
    assert not is_transient(KeyError())
    assert not is_transient(CircuitOpenError("x"))
    assert not is_transient(RetryBudgetExhaustedError("x"))

    class RateLimitError(Exception):
        pass

    class APIConnectionError(Exception):
        pass

    assert is_transient(RateLimitError())
    assert is_transient(APIConnectionError())


def test_invalid_settings() -> None:
    with pytest.raises(ConfigurationError):
        Retry(0)
    with pytest.raises(ConfigurationError):
        Retry(3, jitter="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Retry(3, multiplier=0.5)
    with pytest.raises(ConfigurationError):
        Retry(3, deadline_s=0)
