"""Fallback, DegradationManager (levels, features, listeners) and HealthChecker (hysteresis,
real Redis and Postgres checks)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from langgraph_resilient import (
    CircuitBreaker,
    CircuitOpenError,
    ConfigurationError,
    DegradationManager,
    EventBus,
    EventKind,
    Fallback,
    FeatureDisabledError,
    HealthChecker,
    ManualClock,
    ResilienceEvent,
    ResiliencePolicy,
    ServiceLevel,
)
from tests.conftest import POSTGRES_URL, REDIS_URL
from tests.runtime.conftest import Recorder


def broken(state: Any) -> Any:
    raise ConnectionError("llm down")


def test_fallback_gets_state_and_error(bus: EventBus, recorder: Recorder) -> None:
    seen: list[Any] = []

    def fallback(state: Any, error: BaseException) -> dict[str, str]:
        seen.append((state, type(error)))
        return {"answer": "degraded"}

    guarded = ResiliencePolicy(fallback=Fallback(fallback), events=bus).guard(broken)
    assert guarded({"q": 1}) == {"answer": "degraded"}
    assert seen == [({"q": 1}, ConnectionError)]
    assert recorder.of(EventKind.FALLBACK)[0].detail["error"] == "ConnectionError"


def test_fallback_on_filters_errors() -> None:
    policy = ResiliencePolicy(fallback=Fallback(lambda s, e: "fb", on=(KeyError,)))
    with pytest.raises(ConnectionError):
        policy.guard(broken)(None)

    def key_error(state: Any) -> Any:
        raise KeyError("x")

    assert policy.guard(key_error)(None) == "fb"
    # a plain callable works as a Fallback too
    assert ResiliencePolicy(fallback=lambda s, e: "plain").guard(broken)(None) == "plain"


def test_fallback_answers_for_an_open_breaker(clock: ManualClock) -> None:
    breaker = CircuitBreaker("fb", minimum_calls=1, window_size=1, clock=clock)
    errors: list[type[BaseException]] = []
    policy = ResiliencePolicy(breaker=breaker, fallback=lambda s, e: errors.append(type(e)) or "fb")
    guarded = policy.guard(broken)
    assert guarded(None) == "fb"
    assert guarded(None) == "fb"
    assert errors == [ConnectionError, CircuitOpenError]


async def test_async_fallback_and_its_sync_misuse() -> None:
    async def afallback(state: Any, error: BaseException) -> str:
        await asyncio.sleep(0)
        return "async fb"

    async def abroken(state: Any) -> Any:
        raise ConnectionError("down")

    policy = ResiliencePolicy(fallback=afallback)
    assert await policy.guard(abroken)(None) == "async fb"
    with pytest.raises(ConfigurationError, match="Fallback is async"):
        policy.guard(broken)(None)


def test_feature_gate_with_and_without_fallback(bus: EventBus, recorder: Recorder) -> None:
    manager = DegradationManager({"analysis": ServiceLevel.FULL}, events=bus)
    calls = 0

    def analysis(state: Any) -> str:
        nonlocal calls
        calls += 1
        return "full answer"

    with_fb = ResiliencePolicy(
        feature="analysis",
        degradation=manager,
        fallback=lambda s, e: type(e).__name__,
        events=bus,
    ).guard(analysis)
    without_fb = ResiliencePolicy(feature="analysis", degradation=manager, events=bus).guard(
        analysis
    )
    assert with_fb(None) == without_fb(None) == "full answer"
    manager.set_level(ServiceLevel.DEGRADED, reason="redis down")
    assert with_fb(None) == "FeatureDisabledError"
    with pytest.raises(FeatureDisabledError, match="'analysis' is switched off"):
        without_fb(None)
    assert calls == 2
    kinds = recorder.kinds()
    assert EventKind.DEGRADATION_LEVEL in kinds and EventKind.FEATURE_DISABLED in kinds
    toggled = recorder.of(EventKind.FEATURE_TOGGLED)[0]
    assert (toggled.source, toggled.detail["enabled"]) == ("analysis", False)


def test_feature_needs_a_manager() -> None:
    with pytest.raises(ConfigurationError, match="DegradationManager"):
        ResiliencePolicy(feature="x").guard(broken)


def test_levels_overrides_unknown_features_and_listeners(bus: EventBus) -> None:
    manager = DegradationManager(
        {"search": ServiceLevel.DEGRADED, "core": ServiceLevel.MINIMAL},
        unknown_feature_level=ServiceLevel.DEGRADED,
        events=bus,
    )
    heard: list[ResilienceEvent] = []
    remove = manager.add_listener(heard.append)
    assert manager.is_enabled("search") and manager.is_enabled("anything")
    assert manager.set_level(ServiceLevel.DEGRADED)
    assert not manager.set_level(ServiceLevel.DEGRADED)
    assert manager.is_enabled("search") and manager.is_enabled("anything")
    manager.set_level(ServiceLevel.MINIMAL)
    assert not manager.is_enabled("search")
    assert not manager.is_enabled("anything")
    assert manager.is_enabled("core")
    manager.disable("core")
    assert not manager.is_enabled("core")
    manager.enable("search")
    assert manager.is_enabled("search")
    manager.reset("search")
    manager.reset("core")
    assert manager.is_enabled("core") and not manager.is_enabled("search")
    manager.register("search", ServiceLevel.MINIMAL)
    assert manager.is_enabled("search")
    levels = [
        (e.detail["old"], e.detail["new"]) for e in heard if e.kind is EventKind.DEGRADATION_LEVEL
    ]
    assert levels == [
        (ServiceLevel.FULL, ServiceLevel.DEGRADED),
        (ServiceLevel.DEGRADED, ServiceLevel.MINIMAL),
    ]
    remove()
    manager.set_level(ServiceLevel.FULL)
    assert len([e for e in heard if e.kind is EventKind.DEGRADATION_LEVEL]) == 2
    assert ServiceLevel.FULL > ServiceLevel.DEGRADED > ServiceLevel.MINIMAL


# ---------------------------------------------------------------------- health checker


async def test_hysteresis_and_lowest_level_wins(bus: EventBus, recorder: Recorder) -> None:
    manager = DegradationManager(events=bus)
    results = {"cache": True, "db": True}
    checker = HealthChecker(manager, failures_to_degrade=2, successes_to_recover=3)
    checker.add_check("cache", lambda: results["cache"], degrades_to=ServiceLevel.DEGRADED)

    async def db() -> bool:
        return results["db"]

    checker.add_check("db", db, degrades_to=ServiceLevel.MINIMAL)
    assert await checker.check_once() is ServiceLevel.FULL
    results["cache"] = False
    assert await checker.check_once() is ServiceLevel.FULL  # one failure is not enough
    assert await checker.check_once() is ServiceLevel.DEGRADED
    assert manager.level is ServiceLevel.DEGRADED
    results["db"] = False
    await checker.check_once()
    assert await checker.check_once() is ServiceLevel.MINIMAL
    results["cache"] = results["db"] = True
    for _ in range(2):
        assert await checker.check_once() is ServiceLevel.MINIMAL
    results["db"] = False  # a flap resets the recovery streak
    await checker.check_once()
    results["db"] = True
    for _ in range(2):
        await checker.check_once()
    assert manager.level is ServiceLevel.MINIMAL
    assert await checker.check_once() is ServiceLevel.FULL
    assert checker.status() == {"cache": True, "db": True}
    health = [(e.source, e.detail["healthy"]) for e in recorder.of(EventKind.HEALTH_CHECK)]
    assert health == [("cache", False), ("db", False), ("cache", True), ("db", True)]


async def test_failing_raising_and_slow_checks_are_unhealthy() -> None:
    manager = DegradationManager()
    checker = HealthChecker(manager, failures_to_degrade=1, timeout_s=0.02)

    def raises() -> bool:
        raise RuntimeError("nope")

    async def slow() -> bool:
        await asyncio.sleep(1)
        return True

    checker.add_check("raises", raises)
    checker.add_check("slow", slow)
    checker.add_check("none_is_ok", lambda: None)
    await checker.check_once()
    assert checker.status() == {"raises": False, "slow": False, "none_is_ok": True}
    with pytest.raises(ConfigurationError):
        checker.add_check("slow", slow)


async def test_real_redis_postgres_and_breaker_checks(clock: ManualClock) -> None:
    manager = DegradationManager()
    checker = HealthChecker(manager, failures_to_degrade=1, successes_to_recover=1, timeout_s=2)
    checker.add_redis(REDIS_URL)
    checker.add_postgres(POSTGRES_URL)
    checker.add_redis(
        "redis://127.0.0.1:1/0", name="missing-redis", degrades_to=ServiceLevel.DEGRADED
    )
    breaker = CircuitBreaker("hc", clock=clock)
    checker.add_breaker(breaker, degrades_to=ServiceLevel.MINIMAL)
    assert await checker.check_once() is ServiceLevel.DEGRADED
    assert checker.status() == {
        "redis": True,
        "postgres": True,
        "missing-redis": False,
        "breaker:hc": True,
    }
    breaker.force_open()
    assert await checker.check_once() is ServiceLevel.MINIMAL
    assert manager.level is ServiceLevel.MINIMAL


async def test_background_task_loop() -> None:
    manager = DegradationManager()
    clock = ManualClock()
    checker = HealthChecker(manager, failures_to_degrade=1, interval_s=5, clock=clock)
    healthy = True
    checker.add_check("dep", lambda: healthy)
    async with checker:
        healthy = False
        for _ in range(20):
            await asyncio.sleep(0)
            if manager.level is ServiceLevel.DEGRADED:
                break
    assert manager.level is ServiceLevel.DEGRADED
    assert clock.sleeps and clock.sleeps[0] == 5


def test_background_thread_loop() -> None:
    manager = DegradationManager()
    checker = HealthChecker(manager, failures_to_degrade=1, interval_s=0.01)
    checker.add_check("dep", lambda: False)
    with checker:
        deadline = time.monotonic() + 5
        while manager.level is ServiceLevel.FULL and time.monotonic() < deadline:
            time.sleep(0.005)
    assert manager.level is ServiceLevel.DEGRADED
