"""The worker threads behind a sync ``Timeout``: reused, never queued behind a stuck one,
stopped when idle, pinned to the caller's core only for the hand-off (node code runs with the
process's cores, and so do the threads it starts), and usable again in a forked child."""

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
def test_node_code_and_its_threads_run_with_the_process_cores() -> None:
    cores = os.sched_getaffinity(0)
    seen: dict[str, set[int]] = {}

    def node() -> None:
        seen["node"] = os.sched_getaffinity(0)
        child = threading.Thread(target=lambda: seen.update(child=os.sched_getaffinity(0)))
        child.start()
        child.join(5)

    guarded = ResiliencePolicy(timeout=Timeout(5)).guard(node)
    for _ in range(3):
        guarded()
        assert seen == {"node": cores, "child": cores}


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
