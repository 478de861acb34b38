"""``Timeout``: a limit on each attempt, for async and sync nodes alike.

Async work is cancelled when its time is up (one timer per duration: :class:`DeadlineQueue`).
Sync work cannot be cancelled in Python, so a sync node under a ``Timeout`` runs on a worker
thread while the caller waits with a deadline; when the deadline passes the caller gets
``NodeTimeoutError`` and the thread is *abandoned*, not killed: it runs on until the node's
code returns, holding whatever it holds (a socket, a lock, memory). Anything it writes or
streams after the timeout is dropped (the middleware closes its send/stream/writer hooks), and
its return value is discarded. Give blocking calls inside sync nodes their own timeouts (HTTP
client timeouts, for instance) so abandoned threads finish; or make the node async, whose
cancellation is real.

Why a second thread, and what it costs. The calling thread cannot both run the node and walk
away from it (Python cannot interrupt a running thread), so the node runs on a worker while
the caller waits with a deadline. What a call costs is then two thread switches, and each is a
sleep and a wake-up in the kernel, so the pool keeps them to the minimum:

- workers are long-lived (one per concurrent attempt; an idle one is stopped once it has been
  idle for 30 s and another call comes), and a call takes an idle one: no executor, no future;
- the job is handed over by a write to the worker's pipe, made without the GIL, so the woken
  worker can take the GIL at once instead of waking only to wait for it; the caller then waits
  on one lock, which the worker releases before it goes back to sleep;
- on Linux the worker is pinned to the core its caller runs on (the caller is about to sleep
  there), and stays pinned while calls come from that core: no system call per call.
  Otherwise the scheduler wakes the worker on an idle core, a core's wake-up from idle is the
  dearest part (tens of microseconds each way on a VM), and the caller's code then runs
  slower on a cold core; unpinning the worker for every node (and pinning it again) cost
  about 20 us per call, measured, as the scheduler then moves the two threads around.

What the pinning means for node code: a sync node under a ``Timeout`` runs on its caller's
core for its first half millisecond (``_PINNED_FOR_S``); a node that runs longer is given the
process's cores back then (one system call), and so are the threads it starts from then on. A
thread started in that first half millisecond keeps the single core (if it does CPU work
without the GIL, start it elsewhere, or leave ``Timeout`` out of that node). If pinning fails
(a cpuset without that core) or the platform cannot pin, the pool never pins.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from langgraph_resilient.errors import ConfigurationError

__all__ = ["Timeout"]


class Timeout:
    """Fail an attempt with ``NodeTimeoutError`` once it has run for ``seconds``.

    The limit applies per attempt (the retry policy, outside it, may start another one). For
    async nodes the attempt is cancelled. For sync nodes the attempt runs in a worker thread
    that is abandoned, not stopped, when time is up: see the module documentation. A sync node
    under a ``Timeout`` pays a hand-off to a worker thread and back per call (tens of
    microseconds; see docs/middleware.md).
    """

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        if not seconds > 0:
            raise ConfigurationError(f"Timeout(seconds={seconds!r}) must be positive")
        self.seconds = float(seconds)

    def __repr__(self) -> str:
        return f"Timeout(seconds={self.seconds})"


class AttemptExpired(Exception):
    """Internal: the worker thread did not finish in time (never escapes the middleware)."""


_GO, _QUIT = b"g", b"q"
_PINNED_FOR_S = 0.0005
"""A node pinned to its caller's core is given the process's cores after this long."""


def _current_cpu_function() -> Callable[[], int] | None:
    """libc's ``sched_getcpu`` (the core the calling thread runs on), where the platform can
    also pin a thread to a core; ``None`` elsewhere."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    try:
        getcpu = ctypes.CDLL(None, use_errno=True).sched_getcpu
    except (OSError, AttributeError):
        return None
    getcpu.argtypes = ()
    getcpu.restype = ctypes.c_int
    return getcpu


class _Job:
    __slots__ = ("args", "context", "done", "error", "fn", "result")

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], context: contextvars.Context
    ) -> None:
        self.fn = fn
        self.args = args
        self.context = context
        self.done = threading.Lock()
        self.done.acquire()  # released by the worker once the result (or error) is set
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.context.run(self.fn, *self.args)
        except BaseException as exc:
            self.error = exc


class _Worker:
    """One long-lived thread running one job at a time, woken through its pipe."""

    __slots__ = (
        "cores", "cpu", "current", "idle_since", "job", "native_id", "pool", "reader", "writer",
    )  # fmt: skip

    def __init__(self, pool: _ThreadPool) -> None:
        self.pool = pool
        self.job: _Job | None = None
        self.current: _Job | None = None  # the job it runs now
        self.idle_since = 0.0
        # The affinity the thread inherits from its creator (this thread), read here: it is
        # given back to a node that runs longer than _PINNED_FOR_S. ``cpu``: the core the
        # worker is pinned to, or -1.
        self.cores = os.sched_getaffinity(0) if pool.follow_caller else None
        self.cpu = -1
        self.reader, self.writer = os.pipe()
        thread = threading.Thread(
            target=self._loop, name="langgraph-resilient-timeout", daemon=True
        )
        thread.start()
        self.native_id = thread.native_id or 0

    def hand(self, job: _Job) -> None:
        """Give the (idle) worker a job. ``os.write`` releases the GIL around the system
        call, so the worker, woken by it, runs at once rather than waiting for the GIL."""
        self.job = job
        os.write(self.writer, _GO)

    def _loop(self) -> None:
        pool = self.pool
        while os.read(self.reader, 1) == _GO:
            job = self.current = self.job
            self.job = None
            assert job is not None
            job.run()
            self.current = None
            # back on the idle list before the caller wakes, and asleep right after
            self.idle_since = time.monotonic()
            with pool.lock:
                pool.idle.append(self)
            job.done.release()
            del job
        os.close(self.reader)
        os.close(self.writer)


class _ThreadPool:
    """Elastic worker threads for sync attempts under a timeout.

    Unlike a fixed-size executor it never queues a job behind abandoned (stuck) threads: when
    no worker is idle it starts another one. A worker idle for ``idle_s`` is stopped by the
    next call. ``follow_caller``: pin the worker to the caller's core for the hand-off (module
    docs); ``None`` means where the platform allows it.
    """

    def __init__(self, idle_s: float = 30.0, follow_caller: bool | None = None) -> None:
        self.idle_s = idle_s
        self.lock = threading.Lock()
        self.idle: list[_Worker] = []
        """Idle workers, the longest idle first; calls take the last one."""
        self._current_cpu = _current_cpu_function()
        self.follow_caller = self._current_cpu is not None and follow_caller is not False

    def run(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout_s: float) -> Any:
        """Run ``fn(*args)`` on a worker in a copy of this context; raise
        :class:`AttemptExpired` if it has not returned within ``timeout_s``."""
        job = _Job(fn, args, contextvars.copy_context())
        stale = None
        with self.lock:
            idle = self.idle
            worker = idle.pop() if idle else None
            if idle and time.monotonic() - idle[0].idle_since > self.idle_s:
                stale = idle.pop(0)
        if stale is not None:
            os.write(stale.writer, _QUIT)
        if worker is None:
            worker = _Worker(self)
        if self.follow_caller:
            self._follow(worker)
        worker.hand(job)
        done = job.done
        if worker.cpu < 0 or timeout_s <= _PINNED_FOR_S:
            finished = done.acquire(timeout=timeout_s)
        elif not (finished := done.acquire(timeout=_PINNED_FOR_S)):
            self._release(worker, job)
            finished = done.acquire(timeout=timeout_s - _PINNED_FOR_S)
        if not finished:
            self._release(worker, job)  # abandoned: it runs on with the process's cores
            raise AttemptExpired
        if job.error is not None:
            error = job.error
            job.error = None  # no reference cycle through the traceback
            raise error
        return job.result

    def _follow(self, worker: _Worker) -> None:
        """Pin the (sleeping) worker to the caller's core, unless it is pinned there."""
        assert self._current_cpu is not None
        cpu = self._current_cpu()
        if worker.cpu == cpu:
            return
        try:
            os.sched_setaffinity(worker.native_id, (cpu,))
        except OSError:  # a core this process may not use now (cpuset change, hotplug)
            self.follow_caller = False
            return
        worker.cpu = cpu

    def _release(self, worker: _Worker, job: _Job) -> None:
        """Give the worker running ``job`` its own cores back (it has run for a while)."""
        with self.lock:  # meanwhile the worker cannot go idle and be pinned by another call
            if worker.current is not job or worker.cpu < 0 or worker.cores is None:
                return
            with contextlib.suppress(OSError):
                os.sched_setaffinity(worker.native_id, worker.cores)
            worker.cpu = -1

    def forget(self) -> None:
        """After ``fork()``: the child has none of the parent's worker threads."""
        self.lock = threading.Lock()
        self.idle = []


THREADS = _ThreadPool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=THREADS.forget)


# ---------------------------------------------------------------------- async deadlines

_ACTIVE, _DONE, _FIRED = 0, 1, 2


class Deadline:
    """One attempt's deadline: the task to cancel and when."""

    __slots__ = ("state", "task", "when")

    def __init__(self, task: asyncio.Task[Any], when: float) -> None:
        self.task = task
        self.when = when
        self.state = _ACTIVE

    @property
    def fired(self) -> bool:
        """True once the deadline passed and the task was cancelled for it."""
        return self.state == _FIRED


class DeadlineQueue:
    """Every deadline of one duration on one event loop, in start order.

    Deadlines of equal duration expire in the order they start, so one timer for the oldest
    live deadline serves them all: starting and finishing an attempt is a deque append and a
    flag, not a timer-heap insertion and cancellation as with ``asyncio.timeout`` (same
    semantics, a fraction of the cost on the success path).
    """

    __slots__ = ("entries", "handle", "loop", "seconds")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        self.loop = loop
        self.seconds = seconds
        self.entries: deque[Deadline] = deque()
        self.handle: asyncio.TimerHandle | None = None

    def start(self, task: asyncio.Task[Any]) -> Deadline:
        deadline = Deadline(task, self.loop.time() + self.seconds)
        self.entries.append(deadline)
        if self.handle is None:
            self.handle = self.loop.call_at(deadline.when, self._fire)
        return deadline

    def finish(self, deadline: Deadline) -> None:
        if deadline.state == _ACTIVE:
            deadline.state = _DONE
        entries = self.entries
        while entries and entries[0].state != _ACTIVE:
            entries.popleft()

    def _fire(self) -> None:
        self.handle = None
        now = self.loop.time()
        entries = self.entries
        while entries:
            head = entries[0]
            if head.state != _ACTIVE:
                entries.popleft()
            elif head.when <= now:
                entries.popleft()
                head.state = _FIRED
                head.task.cancel()
            else:
                break
        if entries:
            self.handle = self.loop.call_at(entries[0].when, self._fire)


class DeadlineQueues:
    """The ``DeadlineQueue`` of each event loop for one timeout duration."""

    __slots__ = ("_by_loop", "_last", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, DeadlineQueue] = (
            weakref.WeakKeyDictionary()
        )
        self._last: DeadlineQueue | None = None

    def get(self, loop: asyncio.AbstractEventLoop) -> DeadlineQueue:
        last = self._last
        if last is not None and last.loop is loop:
            return last
        found = self._by_loop.get(loop)
        if found is None:
            found = self._by_loop[loop] = DeadlineQueue(loop, self.seconds)
        self._last = found
        return found
