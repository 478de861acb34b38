"""The worker threads behind a sync ``Timeout``: reused, never queued behind a stuck one,
stopped when idle, pinned to the caller's core only for a node's first half millisecond (a
longer node, the threads it starts then, and an abandoned one run with the process's cores),
and usable again in a forked child."""

from __future__ import annotations

import os
import threading
import time

import pytest

from langgraph_resilient import NodeTimeoutError, ResiliencePolicy, Timeout
from langgraph_resilient.runtime.timeout import THREADS, AttemptExpired, _ThreadPool

pinning = pytest.mark.skipif(not THREADS.follow_caller, reason="the platform cannot pin threads")


def test_a_worker_is_reused_and_a_stuck_one_is_not_waited_for() -> None:
    pool = _ThreadPool()
    ident = threading.get_ident
    first = pool.run(ident, (), 5)
    assert pool.run(ident, (), 5) == first, "the idle worker took the next call"
    release = threading.Event()
    with pytest.raises(AttemptExpired):
        pool.run(release.wait, (5,), 0.05)
    assert pool.run(ident, (), 5) != first, "a new worker, not a queue behind the stuck one"
    release.set()


def test_idle_workers_are_stopped_by_the_next_call() -> None:
    pool = _ThreadPool(idle_s=0.05)
    gate = threading.Barrier(2)
    threads = []

    def busy() -> str:
        threads.append(threading.current_thread())
        gate.wait(5)  # both workers are busy at once: the pool has two
        return "ok"

    caller = threading.Thread(target=pool.run, args=(busy, (), 5))
    caller.start()
    assert pool.run(busy, (), 5) == "ok"
    caller.join(5)
    assert len(pool.idle) == 2
    time.sleep(0.1)
    pool.run(len, ((),), 5)  # takes one, stops the one idle for longer than idle_s
    oldest = [t for t in threads if t.is_alive()]
    deadline = time.monotonic() + 5
    while len(oldest) > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
        oldest = [t for t in threads if t.is_alive()]
    assert len(oldest) == 1 and len(pool.idle) == 1


@pinning
def test_a_node_gets_the_process_cores_after_its_first_half_millisecond() -> None:
    cores = os.sched_getaffinity(0)
    seen: dict[str, set[int]] = {}

    def quick() -> None:
        seen["quick"] = os.sched_getaffinity(0)

    def slow() -> None:
        time.sleep(0.01)  # longer than _PINNED_FOR_S
        seen["slow"] = os.sched_getaffinity(0)
        child = threading.Thread(target=lambda: seen.update(child=os.sched_getaffinity(0)))
        child.start()
        child.join(5)

    policy = ResiliencePolicy(timeout=Timeout(5))
    for _ in range(3):
        policy.guard(quick)()
        assert len(seen["quick"]) == 1 and seen["quick"] <= cores, "on the caller's core"
        policy.guard(slow)()
        assert seen["slow"] == cores and seen["child"] == cores


@pinning
def test_an_abandoned_worker_runs_on_with_the_process_cores() -> None:
    cores = os.sched_getaffinity(0)
    release = threading.Event()
    seen: list[set[int]] = []

    def stuck() -> None:
        release.wait(5)
        seen.append(os.sched_getaffinity(0))

    pool = _ThreadPool()
    with pytest.raises(AttemptExpired):
        pool.run(stuck, (), 0.0002)  # expires before _PINNED_FOR_S
    release.set()
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [cores]


def test_without_pinning_the_pool_works_the_same() -> None:
    pool = _ThreadPool(follow_caller=False)
    assert not pool.follow_caller
    assert pool.run(lambda a, b: a + b, (2, 3), 5) == 5
    with pytest.raises(KeyError, match="inside"):
        pool.run(lambda: {}["inside"], (), 5)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")
def test_a_forked_child_gets_workers_of_its_own() -> None:
    guarded = ResiliencePolicy(timeout=Timeout(2)).guard(lambda x: x * 2)
    assert guarded(21) == 42  # the parent has an idle worker now
    pid = os.fork()
    if pid == 0:  # the child: the parent's worker thread does not exist here
        try:
            code = 0 if guarded(4) == 8 else 1
        except NodeTimeoutError:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child's call ran (2: it timed out)"


def test_concurrent_callers_each_get_their_own_result() -> None:
    guarded = ResiliencePolicy(timeout=Timeout(5)).guard(lambda i: (i, threading.get_ident()))
    results: dict[int, list[int]] = {}

    def caller(n: int) -> None:
        results[n] = [guarded(n * 1000 + i)[0] for i in range(200)]

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {n: [n * 1000 + i for i in range(200)] for n in range(8)}
