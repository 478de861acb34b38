"""CircuitBreaker (local state): windows, thresholds, half-open probes, manual control, and
hypothesis properties of when it opens and how many probes run at once."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langgraph.errors import GraphInterrupt

from langgraph_resilient import (
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    ConfigurationError,
    EventBus,
    EventKind,
    ManualClock,
    ResiliencePolicy,
)
from tests.runtime.conftest import Recorder


def succeed(breaker: CircuitBreaker) -> None:
    permit = breaker.acquire()
    breaker.on_success(permit, 0.0)


def fail(breaker: CircuitBreaker) -> None:
    permit = breaker.acquire()
    breaker.on_failure(permit, ConnectionError("x"), 0.0)


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.minimum_calls):
        fail(breaker)
    assert breaker.state is CircuitState.OPEN


def test_opens_at_the_failure_rate_and_rejects(
    clock: ManualClock, bus: EventBus, recorder: Recorder
) -> None:
    breaker = CircuitBreaker(
        "b", failure_rate_threshold=0.5, minimum_calls=4, window_size=10, clock=clock, events=bus
    )
    succeed(breaker)
    fail(breaker)
    succeed(breaker)
    assert breaker.state is CircuitState.CLOSED  # 3 calls < minimum
    fail(breaker)  # 2/4 = 50%
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError) as info:
        breaker.acquire("node")
    assert info.value.retry_after_s == pytest.approx(30.0)
    assert "retry in 30.0s" in str(info.value)
    (change,) = recorder.of(EventKind.BREAKER_STATE)
    assert (change.detail["old"], change.detail["new"]) == ("closed", "open")
    assert change.detail["reason"] == "failure_rate"
    (rejected,) = recorder.of(EventKind.BREAKER_REJECTED)
    assert rejected.detail["node"] == "node"


def test_half_open_probes_close_or_reopen(
    clock: ManualClock, bus: EventBus, recorder: Recorder
) -> None:
    breaker = CircuitBreaker(
        "b",
        minimum_calls=2,
        window_size=2,
        open_for_s=10,
        half_open_max_calls=2,
        clock=clock,
        events=bus,
    )
    trip(breaker)
    clock.advance(9.9)
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    clock.advance(0.1)
    first, second = breaker.acquire(), breaker.acquire()
    assert breaker.state is CircuitState.HALF_OPEN
    with pytest.raises(CircuitOpenError):  # both probe slots taken
        breaker.acquire()
    breaker.on_success(first, 0.0)
    assert breaker.state is CircuitState.HALF_OPEN
    with pytest.raises(CircuitOpenError):  # one success banked, one probe in flight: full
        breaker.acquire()
    breaker.on_success(second, 0.0)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.snapshot()["calls"] == 0  # the window starts afresh

    trip(breaker)
    clock.advance(10)
    probe = breaker.acquire()
    breaker.on_failure(probe, ConnectionError(), 0.0)
    assert breaker.state is CircuitState.OPEN
    transitions = [(e.detail["old"], e.detail["new"]) for e in recorder.of(EventKind.BREAKER_STATE)]
    assert transitions == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
    ]


def test_a_probe_that_never_reports_expires(clock: ManualClock) -> None:
    breaker = CircuitBreaker(
        "b", minimum_calls=1, window_size=1, open_for_s=1, probe_ttl_s=5, clock=clock
    )
    trip(breaker)
    clock.advance(1)
    breaker.acquire()  # this caller "dies"
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    clock.advance(5)
    permit = breaker.acquire()
    breaker.on_success(permit, 0.0)
    assert breaker.state is CircuitState.CLOSED


def test_late_outcomes_are_ignored(clock: ManualClock) -> None:
    breaker = CircuitBreaker("b", minimum_calls=2, window_size=2, open_for_s=1, clock=clock)
    slow_call = breaker.acquire()  # admitted while closed
    trip(breaker)
    breaker.on_success(slow_call, 0.0)  # reported after the breaker opened: no effect
    assert breaker.state is CircuitState.OPEN
    clock.advance(1)
    probe = breaker.acquire()
    breaker.on_failure(probe, ConnectionError(), 0.0)
    breaker.on_success(probe, 0.0)  # a second report of a finished probe: no effect
    assert breaker.state is CircuitState.OPEN


def test_slow_calls_open_the_breaker(clock: ManualClock) -> None:
    breaker = CircuitBreaker(
        "b",
        slow_call_duration_s=1.0,
        slow_call_rate_threshold=0.5,
        minimum_calls=2,
        window_size=4,
        clock=clock,
    )

    def call(duration: float) -> str:
        clock.advance(duration)
        return "ok"

    guarded = ResiliencePolicy(breaker=breaker).guard(call)
    guarded(0.1)
    guarded(2.0)  # 1 slow of 2
    assert breaker.state is CircuitState.OPEN
    assert breaker.snapshot()["calls"] == 0


def test_time_window_forgets_old_calls(clock: ManualClock) -> None:
    breaker = CircuitBreaker("b", window="time", window_size=10, minimum_calls=3, clock=clock)
    fail(breaker)
    fail(breaker)
    clock.advance(10)  # those two fall out of the window
    fail(breaker)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.snapshot()["calls"] == 1
    fail(breaker)
    fail(breaker)
    assert breaker.state is CircuitState.OPEN


def test_interrupts_and_ignored_errors_are_not_counted(clock: ManualClock) -> None:
    breaker = CircuitBreaker(
        "b",
        minimum_calls=1,
        window_size=1,
        open_for_s=1,
        failure_on=lambda e: not isinstance(e, KeyError),
        clock=clock,
    )

    def interrupt() -> None:
        raise GraphInterrupt(())

    def key_error() -> None:
        raise KeyError("user error")

    policy = ResiliencePolicy(breaker=breaker)
    for fn, error in ((interrupt, GraphInterrupt), (key_error, KeyError)):
        for _ in range(5):
            with pytest.raises(error):
                policy.guard(fn)()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.snapshot()["calls"] == 0

    trip(breaker)
    clock.advance(1)
    with pytest.raises(GraphInterrupt):
        policy.guard(interrupt)()  # the probe is given back, not counted
    assert breaker.snapshot()["probes_in_flight"] == 0
    succeed(breaker)
    assert breaker.state is CircuitState.CLOSED


def test_manual_control(clock: ManualClock, bus: EventBus, recorder: Recorder) -> None:
    breaker = CircuitBreaker("b", open_for_s=5, clock=clock, events=bus)
    breaker.force_open()
    clock.advance(3600)
    assert breaker.state is CircuitState.FORCED_OPEN
    with pytest.raises(CircuitOpenError) as info:
        breaker.acquire()
    assert info.value.retry_after_s is None
    breaker.close()
    succeed(breaker)
    breaker.open(for_s=2)
    assert breaker.state is CircuitState.OPEN
    clock.advance(2)
    assert breaker.state is CircuitState.HALF_OPEN
    reasons = {e.detail["reason"] for e in recorder.of(EventKind.BREAKER_STATE)}
    assert "manual" in reasons


async def test_cancelled_probe_frees_its_slot(clock: ManualClock) -> None:
    breaker = CircuitBreaker("b", minimum_calls=1, window_size=1, open_for_s=1, clock=clock)
    trip(breaker)
    clock.advance(1)
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(ResiliencePolicy(breaker=breaker).guard(hang)())
    await started.wait()
    assert breaker.snapshot()["probes_in_flight"] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.snapshot()["probes_in_flight"] == 0
    assert breaker.state is CircuitState.HALF_OPEN


def test_invalid_settings() -> None:
    with pytest.raises(ConfigurationError, match="minimum_calls"):
        CircuitBreaker("b", minimum_calls=20, window_size=10)
    with pytest.raises(ConfigurationError):
        CircuitBreaker("b", failure_rate_threshold=0)
    with pytest.raises(ConfigurationError):
        CircuitBreaker("")
    with pytest.raises(ConfigurationError):
        CircuitBreaker("b", window="sliding")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- properties

outcomes = st.lists(st.booleans(), min_size=1, max_size=80)  # True = failure


@settings(max_examples=200, deadline=None)
@given(
    outcomes=outcomes,
    window=st.integers(1, 20),
    minimum=st.integers(1, 20),
    threshold=st.sampled_from([0.1, 0.25, 1 / 3, 0.5, 0.6, 0.75, 1.0]),
)
def test_count_window_opens_exactly_at_the_threshold(
    outcomes: list[bool], window: int, minimum: int, threshold: float
) -> None:
    minimum = min(minimum, window)
    breaker = CircuitBreaker(
        "p",
        failure_rate_threshold=threshold,
        window_size=window,
        minimum_calls=minimum,
        clock=ManualClock(),
        events=EventBus(),
    )
    expected_open_at = None
    for i in range(len(outcomes)):
        recent = outcomes[max(0, i + 1 - window) : i + 1]
        if len(recent) >= minimum and sum(recent) / len(recent) >= threshold:
            expected_open_at = i
            break
    for i, failed in enumerate(outcomes):
        (fail if failed else succeed)(breaker)
        should_be_open = expected_open_at is not None and i >= expected_open_at
        assert (breaker.state is CircuitState.OPEN) == should_be_open, (i, expected_open_at)
        if should_be_open:
            with pytest.raises(CircuitOpenError):
                breaker.acquire()
            break


@settings(max_examples=150, deadline=None)
@given(
    calls=st.lists(
        st.tuples(st.floats(0, 4, allow_nan=False), st.booleans()), min_size=1, max_size=60
    ),
    window=st.integers(1, 10),
    minimum=st.integers(1, 8),
    threshold=st.sampled_from([0.25, 0.5, 0.75, 1.0]),
)
def test_time_window_opens_exactly_at_the_threshold(
    calls: list[tuple[float, bool]], window: int, minimum: int, threshold: float
) -> None:
    clock = ManualClock(start=0.0)
    breaker = CircuitBreaker(
        "p",
        window="time",
        failure_rate_threshold=threshold,
        window_size=window,
        minimum_calls=minimum,
        clock=clock,
        events=EventBus(),
    )
    seen: list[tuple[int, bool]] = []
    for gap, failed in calls:
        clock.advance(gap)
        now = int(clock.monotonic())
        seen.append((now, failed))
        recent = [f for sec, f in seen if sec > now - window]
        expect_open = len(recent) >= minimum and sum(recent) / len(recent) >= threshold
        (fail if failed else succeed)(breaker)
        assert (breaker.state is CircuitState.OPEN) == expect_open
        if expect_open:
            break


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(max_probes=st.integers(1, 4), callers=st.integers(1, 24), fail_probe=st.booleans())
def test_never_more_half_open_probes_than_allowed_threads(
    max_probes: int, callers: int, fail_probe: bool
) -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        f"p-{uuid.uuid4().hex[:6]}",
        minimum_calls=1,
        window_size=1,
        open_for_s=1,
        half_open_max_calls=max_probes,
        clock=clock,
        events=EventBus(),
    )
    trip(breaker)
    clock.advance(1)
    lock = threading.Lock()
    in_flight = peak = 0
    release = threading.Event()
    start = threading.Barrier(callers)

    def probe() -> str:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        release.wait(5)
        with lock:
            in_flight -= 1
        if fail_probe:
            raise ConnectionError("still down")
        return "ok"

    guarded = ResiliencePolicy(breaker=breaker).guard(probe)
    results: list[Any] = []

    def caller() -> None:
        start.wait(5)
        try:
            results.append(guarded())
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for t in threads:
        t.start()
    # wait until every caller is either running a probe or has been rejected
    for _ in range(1000):
        with lock:
            settled = in_flight + sum(isinstance(r, CircuitOpenError) for r in results)
        if settled >= callers:
            break
        threading.Event().wait(0.002)
    release.set()
    for t in threads:
        t.join(5)
    assert peak <= max_probes
    assert peak == min(max_probes, callers)
    admitted_total = sum(1 for r in results if not isinstance(r, CircuitOpenError))
    assert admitted_total <= max_probes


@settings(max_examples=40, deadline=None)
@given(max_probes=st.integers(1, 5), callers=st.integers(1, 40))
def test_never_more_half_open_probes_than_allowed_tasks(max_probes: int, callers: int) -> None:
    async def scenario() -> tuple[int, int]:
        clock = ManualClock()
        breaker = CircuitBreaker(
            "p",
            minimum_calls=1,
            window_size=1,
            open_for_s=1,
            half_open_max_calls=max_probes,
            clock=clock,
            events=EventBus(),
        )
        trip(breaker)
        clock.advance(1)
        gate = asyncio.Event()
        in_flight = peak = 0

        async def probe() -> str:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await gate.wait()
            in_flight -= 1
            return "ok"

        guarded = ResiliencePolicy(breaker=breaker).guard(probe)
        tasks = [asyncio.create_task(guarded()) for _ in range(callers)]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        admitted = sum(1 for r in results if r == "ok")
        assert breaker.state is (
            CircuitState.CLOSED if admitted >= max_probes else CircuitState.HALF_OPEN
        )
        return peak, admitted

    peak, admitted = asyncio.run(scenario())
    assert peak <= max_probes
    assert admitted == min(max_probes, callers)
