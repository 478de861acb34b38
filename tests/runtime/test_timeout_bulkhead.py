"""Timeout (async cancellation, sync thread abandonment) and Bulkhead (slots and queue)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from typing import Any

import pytest

from langgraph_resilient import (
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    CircuitState,
    ConfigurationError,
    EventBus,
    EventKind,
    ManualClock,
    NodeTimeoutError,
    ResiliencePolicy,
    Retry,
    Timeout,
)
from tests.runtime.conftest import Recorder

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


async def test_async_attempt_is_cancelled(bus: EventBus, recorder: Recorder) -> None:
    cancelled = asyncio.Event()

    async def hang() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    guarded = ResiliencePolicy(timeout=Timeout(0.02), events=bus).guard(hang, name="hang")
    with pytest.raises(NodeTimeoutError, match=r"'hang' did not finish within its 0\.02s"):
        await guarded()
    assert cancelled.is_set()
    (event,) = recorder.of(EventKind.TIMEOUT)
    assert event.detail == {"timeout_s": 0.02, "thread_abandoned": False}


async def test_own_timeout_error_is_not_rewritten() -> None:
    async def raises() -> None:
        raise TimeoutError("the node's own")

    with pytest.raises(TimeoutError, match="the node's own") as info:
        await ResiliencePolicy(timeout=Timeout(5)).guard(raises)()
    assert not isinstance(info.value, NodeTimeoutError)


async def test_outside_cancellation_stays_cancellation() -> None:
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(ResiliencePolicy(timeout=Timeout(30)).guard(hang)())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_sync_attempt_is_abandoned_in_its_thread(bus: EventBus, recorder: Recorder) -> None:
    release = threading.Event()
    finished = threading.Event()
    seen: list[str] = []

    def blocking() -> str:
        seen.append(VAR.get())
        seen.append(threading.current_thread().name)
        release.wait(5)
        finished.set()
        return "late"

    VAR.set("from the caller")
    guarded = ResiliencePolicy(timeout=Timeout(0.05), events=bus).guard(blocking)
    started = time.monotonic()
    with pytest.raises(NodeTimeoutError):
        guarded()
    assert time.monotonic() - started < 1
    assert seen == ["from the caller", "langgraph-resilient-timeout"]  # contextvars kept
    assert not finished.is_set()  # still running: a thread cannot be killed
    release.set()
    assert finished.wait(5)
    assert recorder.of(EventKind.TIMEOUT)[0].detail["thread_abandoned"] is True


def test_sync_errors_and_results_cross_the_thread() -> None:
    def boom() -> None:
        raise KeyError("inside")

    policy = ResiliencePolicy(timeout=Timeout(5))
    with pytest.raises(KeyError, match="inside"):
        policy.guard(boom)()
    assert policy.guard(lambda x: x * 2)(21) == 42


def test_each_attempt_gets_its_own_timeout(clock: ManualClock, name: str) -> None:
    attempts = 0

    def slow_then_fast() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            time.sleep(0.5)
        return "ok"

    policy = ResiliencePolicy(retry=Retry(2, clock=clock, name=name), timeout=Timeout(0.1))
    assert policy.guard(slow_then_fast)() == "ok"
    assert attempts == 2


async def test_timeouts_count_as_breaker_failures(clock: ManualClock) -> None:
    breaker = CircuitBreaker("t", minimum_calls=2, window_size=2, clock=clock)

    async def hang() -> None:
        await asyncio.sleep(10)

    guarded = ResiliencePolicy(breaker=breaker, timeout=Timeout(0.01)).guard(hang)
    for _ in range(2):
        with pytest.raises(NodeTimeoutError):
            await guarded()
    assert breaker.state is CircuitState.OPEN


def test_timeout_validation() -> None:
    with pytest.raises(ConfigurationError):
        Timeout(0)
    assert ResiliencePolicy(timeout=2.5).timeout is not None


# ---------------------------------------------------------------------- bulkhead


async def test_bulkhead_runs_queues_and_rejects(bus: EventBus, recorder: Recorder) -> None:
    bulkhead = Bulkhead(2, 1)
    gate = asyncio.Event()
    running = peak = 0

    async def work(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1
        return i

    guarded = ResiliencePolicy(bulkhead=bulkhead, events=bus).guard(work)
    tasks = [asyncio.create_task(guarded(i)) for i in range(4)]
    await asyncio.sleep(0.01)
    assert (bulkhead.active, bulkhead.queued) == (2, 1)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[:3] == [0, 1, 2]
    assert isinstance(results[3], BulkheadFullError)
    assert peak == 2
    assert (bulkhead.active, bulkhead.queued) == (0, 0)
    assert recorder.of(EventKind.BULKHEAD_REJECTED)[0].detail["reason"] == "queue_full"


async def test_bulkhead_wait_timeout_and_cancelled_waiters() -> None:
    bulkhead = Bulkhead(1, 2, max_wait_s=0.02)
    gate = asyncio.Event()

    async def work() -> str:
        await gate.wait()
        return "done"

    guarded = ResiliencePolicy(bulkhead=bulkhead).guard(work)
    holder = asyncio.create_task(guarded())
    await asyncio.sleep(0)
    with pytest.raises(BulkheadFullError, match="wait_timeout"):
        await guarded()
    waiter = asyncio.create_task(guarded())
    await asyncio.sleep(0)
    assert bulkhead.queued == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert bulkhead.queued == 0
    gate.set()
    assert await holder == "done"
    assert bulkhead.active == 0


def test_bulkhead_across_threads_is_fifo() -> None:
    bulkhead = Bulkhead(1, 5)
    order: list[int] = []
    gate = threading.Event()

    def work(i: int) -> None:
        if i == 0:
            gate.wait(5)
        order.append(i)

    guarded = ResiliencePolicy(bulkhead=bulkhead).guard(work)
    threads = [threading.Thread(target=guarded, args=(0,))]
    threads[0].start()
    while bulkhead.active == 0:
        time.sleep(0.001)
    for i in range(1, 4):
        t = threading.Thread(target=guarded, args=(i,))
        t.start()
        threads.append(t)
        while bulkhead.queued < i:
            time.sleep(0.001)
    gate.set()
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3]
    assert bulkhead.active == 0


def test_sync_bulkhead_wait_timeout() -> None:
    bulkhead = Bulkhead(1, 1, max_wait_s=0.02)
    bulkhead.acquire()
    with pytest.raises(BulkheadFullError):
        bulkhead.acquire()
    bulkhead.release()
    with pytest.raises(ConfigurationError):
        Bulkhead(0)


def test_bulkhead_without_queue_rejects_at_once() -> None:
    bulkhead = Bulkhead(1)
    results: list[Any] = []
    gate = threading.Event()

    def work() -> str:
        gate.wait(5)
        return "ok"

    guarded = ResiliencePolicy(bulkhead=bulkhead).guard(work)
    t = threading.Thread(target=lambda: results.append(guarded()))
    t.start()
    while bulkhead.active == 0:
        time.sleep(0.001)
    with pytest.raises(BulkheadFullError):
        guarded()
    gate.set()
    t.join(5)
    assert results == ["ok"]


def test_late_writes_of_an_abandoned_attempt_are_dropped() -> None:
    from langgraph._internal._constants import CONFIG_KEY_RUNTIME, CONFIG_KEY_SEND
    from langgraph.runtime import Runtime

    from langgraph_resilient.runtime._compat import guard_late_writes

    written: list[Any] = []
    config: Any = {
        "configurable": {
            CONFIG_KEY_SEND: written.append,
            CONFIG_KEY_RUNTIME: Runtime(stream_writer=written.append),
            "thread_id": "t",
        }
    }
    guarded, close = guard_late_writes(config)
    conf = guarded["configurable"]
    assert conf["thread_id"] == "t"
    conf[CONFIG_KEY_SEND]("before")
    conf[CONFIG_KEY_RUNTIME].stream_writer("chunk before")
    close()
    conf[CONFIG_KEY_SEND]("after")
    conf[CONFIG_KEY_RUNTIME].stream_writer("chunk after")
    assert written == ["before", "chunk before"]
    assert guard_late_writes({})[0] == {}


async def test_many_concurrent_deadlines_fire_in_order() -> None:
    async def work(delay: float) -> float:
        await asyncio.sleep(delay)
        return delay

    guarded = ResiliencePolicy(timeout=Timeout(0.15)).guard(work)
    delays = [0.0, 5.0, 0.01, 3.0, 0.0, 0.02, 4.0]
    results = await asyncio.gather(*(guarded(d) for d in delays), return_exceptions=True)
    for delay, result in zip(delays, results, strict=True):
        if delay < 0.15:
            assert result == delay
        else:
            assert isinstance(result, NodeTimeoutError)
    # the queue is drained and later calls still work
    assert await guarded(0.0) == 0.0


async def test_an_attempt_that_swallows_the_cancellation() -> None:
    async def stubborn() -> str:
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            return "ignored the cancellation"
        return "finished"

    guarded = ResiliencePolicy(timeout=Timeout(0.01)).guard(stubborn)
    assert await guarded() == "ignored the cancellation"
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # nothing left pending
    await asyncio.sleep(0)


async def test_sync_node_under_ainvoke_is_abandoned(bus: EventBus, recorder: Recorder) -> None:
    from typing import TypedDict

    from langgraph.graph import START, StateGraph

    from langgraph_resilient import with_resilience

    class S(TypedDict):
        x: int

    release = threading.Event()

    def blocking(state: S) -> dict[str, int]:
        release.wait(5)
        return {"x": 1}

    builder: StateGraph[Any, Any, Any, Any] = StateGraph(S)
    builder.add_node("blocking", blocking)
    builder.add_edge(START, "blocking")
    graph = with_resilience(builder, ResiliencePolicy(timeout=Timeout(0.03), events=bus)).compile()
    with pytest.raises(NodeTimeoutError):
        await graph.ainvoke({"x": 0})
    release.set()
    assert recorder.of(EventKind.TIMEOUT)[0].detail["thread_abandoned"] is True


async def test_standard_library_timeout_path(bus: EventBus, recorder: Recorder) -> None:
    from langgraph_resilient.runtime.policy import _async_timeout_stdlib, _Site

    async def hang(a: Any, b: Any) -> None:
        await asyncio.sleep(1)

    async def own_timeout(a: Any, b: Any) -> None:
        raise TimeoutError("mine")

    site = _Site("x", node=False)
    with pytest.raises(NodeTimeoutError):
        await _async_timeout_stdlib(hang, 0.01, site, bus, False, (), {})
    with pytest.raises(TimeoutError, match="mine"):
        await _async_timeout_stdlib(own_timeout, 1, site, bus, False, (), {})
    assert len(recorder.of(EventKind.TIMEOUT)) == 1
