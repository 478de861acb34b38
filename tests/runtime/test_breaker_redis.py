"""CircuitBreaker shared through a real Redis: two processes, atomic probes, the same
transitions as the local state machine, and failover to local state when Redis is down."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.backoff import NoBackoff
from redis.retry import Retry

from langgraph_resilient import (
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    DegradationManager,
    EventBus,
    EventKind,
    HealthChecker,
    ManualClock,
    ResiliencePolicy,
    ServiceLevel,
)
from tests.conftest import REDIS_URL
from tests.runtime.conftest import Recorder
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import sys
    from langgraph_resilient import CircuitBreaker, CircuitOpenError, ResiliencePolicy

    url, prefix, name, failures = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    breaker = CircuitBreaker(
        name, redis_url=url, redis_prefix=prefix, minimum_calls=4, window_size=10, open_for_s=30
    )

    def call_dependency():
        raise ConnectionError("dependency down")

    guarded = ResiliencePolicy(breaker=breaker).guard(call_dependency)
    outcome = []
    for _ in range(failures):
        try:
            guarded()
        except CircuitOpenError:
            outcome.append("rejected")
        except ConnectionError:
            outcome.append("failed")
    print(",".join(outcome), breaker.state.value)
    """
)


def run_child(prefix: str, name: str, failures: int) -> str:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD, REDIS_URL, prefix, name, str(failures)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def shared(name: str, prefix: str, **kwargs: Any) -> CircuitBreaker:
    kwargs.setdefault("minimum_calls", 4)
    kwargs.setdefault("window_size", 10)
    kwargs.setdefault("open_for_s", 30)
    return CircuitBreaker(name, redis_url=REDIS_URL, redis_prefix=prefix, **kwargs)


async def failing() -> None:
    raise ConnectionError("dependency down")


async def test_two_processes_share_one_breaker(redis_prefix: str, name: str) -> None:
    here = shared(name, redis_prefix)
    guarded = ResiliencePolicy(breaker=here).guard(failing)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await guarded()
    assert here.state is CircuitState.CLOSED

    # The other process adds two failures to the same window: 4/4 failed, it opens.
    assert run_child(redis_prefix, name, 2) == "failed,failed open"

    # ... and this process sees it open without having seen those failures.
    with pytest.raises(CircuitOpenError) as info:
        await guarded()
    assert info.value.retry_after_s is not None and 25 < info.value.retry_after_s <= 30

    here.close()
    with pytest.raises(ConnectionError):
        await guarded()  # closed again, for everyone


def test_keys_live_under_the_prefix_with_a_hash_tag(redis_prefix: str, name: str) -> None:
    breaker = shared(name, redis_prefix, minimum_calls=1, window_size=1)
    permit = breaker.acquire()
    breaker.on_failure(permit, ConnectionError(), 0.0)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = sorted(k.decode() for k in client.scan_iter(match=f"{redis_prefix}*"))
        assert keys == [f"{redis_prefix}breaker:{{{name}}}:state"]
        assert client.pttl(keys[0]) > 0
        assert client.hget(keys[0], "st") == b"open"
    finally:
        client.close()


async def test_half_open_probes_are_bounded_across_replicas(redis_prefix: str, name: str) -> None:
    replicas = [
        shared(
            name,
            redis_prefix,
            minimum_calls=1,
            window_size=1,
            open_for_s=0.2,
            half_open_max_calls=2,
            probe_ttl_s=5,
        )
        for _ in range(3)
    ]
    permit = await replicas[0].aacquire()
    await replicas[0].aon_failure(permit, ConnectionError(), 0.0)
    await asyncio.sleep(0.25)

    gate = asyncio.Event()
    in_flight = peak = 0

    async def probe() -> str:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await gate.wait()
        in_flight -= 1
        return "ok"

    guarded = [ResiliencePolicy(breaker=r).guard(probe) for r in replicas]
    tasks = [asyncio.create_task(guarded[i % 3]()) for i in range(30)]
    for _ in range(50):
        await asyncio.sleep(0.01)
        if sum(t.done() for t in tasks) == 28:
            break
    assert peak == 2
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results.count("ok") == 2
    assert all(isinstance(r, CircuitOpenError) for r in results if r != "ok")
    assert replicas[1].state is CircuitState.CLOSED


def test_a_dead_probe_expires_in_redis(redis_prefix: str, name: str) -> None:
    a = shared(name, redis_prefix, minimum_calls=1, window_size=1, open_for_s=0.1, probe_ttl_s=0.3)
    b = shared(name, redis_prefix, minimum_calls=1, window_size=1, open_for_s=0.1, probe_ttl_s=0.3)
    a.on_failure(a.acquire(), ConnectionError(), 0.0)
    time.sleep(0.15)
    a.acquire()  # replica a takes the only probe and "crashes"
    with pytest.raises(CircuitOpenError):
        b.acquire()
    time.sleep(0.35)
    probe = b.acquire()
    b.on_success(probe, 0.0)
    assert a.state is CircuitState.CLOSED


def test_manual_control_is_shared(redis_prefix: str, name: str) -> None:
    a, b = shared(name, redis_prefix), shared(name, redis_prefix)
    a.force_open()
    with pytest.raises(CircuitOpenError):
        b.acquire()
    assert b.state is CircuitState.FORCED_OPEN
    b.close()
    assert a.state is CircuitState.CLOSED
    a.on_success(a.acquire(), 0.0)


def test_time_window_in_redis(redis_prefix: str, name: str) -> None:
    breaker = shared(name, redis_prefix, window="time", window_size=60, minimum_calls=4)
    breaker.on_success(breaker.acquire(), 0.0)
    breaker.on_success(breaker.acquire(), 0.0)
    breaker.on_failure(breaker.acquire(), ConnectionError(), 0.0)
    assert breaker.state is CircuitState.CLOSED  # 3 calls < minimum_calls
    breaker.on_failure(breaker.acquire(), ConnectionError(), 0.0)
    assert breaker.state is CircuitState.OPEN  # 2 of 4 failed


@settings(max_examples=30, deadline=None)
@given(
    outcomes=st.lists(st.booleans(), min_size=1, max_size=40),
    window=st.integers(1, 8),
    minimum=st.integers(1, 8),
    threshold=st.sampled_from([0.25, 0.5, 2 / 3, 1.0]),
)
def test_redis_and_local_state_machines_agree(
    outcomes: list[bool], window: int, minimum: int, threshold: float
) -> None:
    minimum = min(minimum, window)
    prefix = f"lgr-test-{uuid.uuid4().hex[:12]}:"
    bus = EventBus()
    backend_switches: list[object] = []
    bus.subscribe(
        lambda e: backend_switches.append(e) if e.kind is EventKind.BREAKER_BACKEND else None
    )
    settings_ = dict(
        failure_rate_threshold=threshold,
        window_size=window,
        minimum_calls=minimum,
        open_for_s=60,
        events=bus,
    )
    local = CircuitBreaker("diff", clock=ManualClock(), **settings_)  # type: ignore[arg-type]
    remote = CircuitBreaker("diff", redis_url=REDIS_URL, redis_prefix=prefix, **settings_)  # type: ignore[arg-type]
    try:
        for failed in outcomes:
            for breaker in (local, remote):
                try:
                    permit = breaker.acquire()
                except CircuitOpenError:
                    continue
                if failed:
                    breaker.on_failure(permit, ConnectionError(), 0.0)
                else:
                    breaker.on_success(permit, 0.0)
            assert local.state is remote.state
        assert not backend_switches  # every decision was made by the Lua scripts
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_falls_back_to_local_state_when_redis_is_down(
    redis_prefix: str, name: str, bus: EventBus, recorder: Recorder
) -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        name,
        redis_url=REDIS_URL,
        redis_prefix=redis_prefix,
        minimum_calls=2,
        window_size=2,
        open_for_s=30,
        redis_retry_s=5,
        clock=clock,
        events=bus,
    )
    backend: Any = breaker._backend
    real_client = backend._sync_client()
    breaker.on_failure(breaker.acquire(), ConnectionError(), 0.0)
    breaker.on_failure(breaker.acquire(), ConnectionError(), 0.0)  # opens in Redis

    # Redis goes away (a client for a port nobody listens on): local state, seeded "open".
    backend._client = redis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    (switch,) = recorder.of(EventKind.BREAKER_BACKEND)
    assert switch.detail["backend"] == "local"
    breaker.close()  # manual control still works locally
    breaker.on_success(breaker.acquire(), 0.0)

    # Redis comes back; after redis_retry_s the breaker uses it again.
    backend._client = real_client
    clock.advance(5)
    with pytest.raises(CircuitOpenError):
        breaker.acquire()  # the shared state is still open
    assert [e.detail["backend"] for e in recorder.of(EventKind.BREAKER_BACKEND)] == [
        "local",
        "redis",
    ]


async def test_async_failover_with_an_unreachable_redis(name: str, bus: EventBus) -> None:
    breaker = CircuitBreaker(
        name,
        redis_url="redis://127.0.0.1:1/0",
        redis_timeout_s=0.2,
        minimum_calls=2,
        window_size=2,
        events=bus,
    )
    guarded = ResiliencePolicy(breaker=breaker).guard(failing)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await guarded()
    with pytest.raises(CircuitOpenError):
        await guarded()


@pytest.mark.parametrize("topology", ["sentinel", "cluster"])
async def test_shared_breakers_and_health_checks_take_sentinel_and_cluster_urls(
    topology: str, request: pytest.FixtureRequest, redis_prefix: str
) -> None:
    """The breaker's backend and ``HealthChecker.add_redis`` build their clients with the
    saver's client factory, so every Redis URL form the saver takes works for them too."""
    servers = request.getfixturevalue(topology)
    url = servers.url() if topology == "sentinel" else servers.url
    one = CircuitBreaker("topo", redis_url=url, redis_prefix=redis_prefix, minimum_calls=2,
                         window_size=2, open_for_s=30)  # fmt: skip
    other = CircuitBreaker("topo", redis_url=url, redis_prefix=redis_prefix, minimum_calls=2,
                           window_size=2, open_for_s=30)  # fmt: skip
    one.on_failure(one.acquire(), ConnectionError(), 0.0)
    await one.aon_failure(await one.aacquire(), ConnectionError(), 0.0)
    assert other.state is CircuitState.OPEN, "the other replica sees the state in Redis"
    with pytest.raises(CircuitOpenError):
        await other.aacquire()
    checker = HealthChecker(DegradationManager(), interval_s=60, failures_to_degrade=1)
    checker.add_redis(url)
    assert await checker.check_once() is ServiceLevel.FULL
    # the control: the same kind of URL naming no live server degrades at once
    dead = HealthChecker(DegradationManager(), timeout_s=0.3, failures_to_degrade=1)
    scheme = "redis+sentinel" if topology == "sentinel" else "redis+cluster"
    dead.add_redis(f"{scheme}://127.0.0.1:{free_port()}/mymaster")
    assert await dead.check_once() is ServiceLevel.DEGRADED
