"""``Timeout``: a limit on each attempt, for async and sync nodes alike.

Async work is cancelled when its time is up (``asyncio.timeout``). Sync work cannot be
cancelled in Python, so a sync node under a ``Timeout`` runs on a worker thread while the
caller waits with a deadline; when the deadline passes the caller gets ``NodeTimeoutError``
and the thread is *abandoned*, not killed: it runs on until the node's code returns, holding
whatever it holds (a socket, a lock, memory). Anything it writes or streams after the timeout
is dropped (the middleware closes its send/stream/writer hooks), and its return value is
discarded. Give blocking calls inside sync nodes their own timeouts (HTTP client timeouts, for
instance) so abandoned threads finish; or make the node async, whose cancellation is real.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
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
    under a ``Timeout`` pays one thread hand-off per call (tens of microseconds).
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


class _Job:
    __slots__ = ("args", "context", "done", "error", "fn", "result")

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], context: contextvars.Context
    ) -> None:
        self.fn = fn
        self.args = args
        self.context = context
        self.done = threading.Lock()
        self.done.acquire()
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.context.run(self.fn, *self.args)
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.release()


class _Worker:
    __slots__ = ("jobs", "pool")

    def __init__(self, pool: _ThreadPool) -> None:
        self.pool = pool
        self.jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        threading.Thread(target=self._loop, name="langgraph-resilient-timeout", daemon=True).start()

    def _loop(self) -> None:
        pool = self.pool
        while True:
            try:
                job = self.jobs.get(timeout=pool.idle_s)
            except queue.Empty:
                with pool.lock:
                    if self in pool.idle:
                        pool.idle.remove(self)
                        return
                continue  # taken from the idle list just now: a job is on its way
            job.run()
            del job
            with pool.lock:
                pool.idle.append(self)


class _ThreadPool:
    """Elastic worker threads for sync attempts under a timeout.

    Unlike a fixed-size executor it never queues a job behind abandoned (stuck) threads: when
    no worker is idle it starts another one. Idle workers exit after ``idle_s``.
    """

    def __init__(self, idle_s: float = 30.0) -> None:
        self.idle_s = idle_s
        self.lock = threading.Lock()
        self.idle: list[_Worker] = []

    def run(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout_s: float) -> Any:
        """Run ``fn(*args)`` on a worker in a copy of this context; raise
        :class:`AttemptExpired` if it has not returned within ``timeout_s``."""
        job = _Job(fn, args, contextvars.copy_context())
        with self.lock:
            worker = self.idle.pop() if self.idle else None
        if worker is None:
            worker = _Worker(self)
        worker.jobs.put(job)
        if not job.done.acquire(timeout=timeout_s):
            raise AttemptExpired
        if job.error is not None:
            error = job.error
            job.error = None
            raise error
        return job.result


THREADS = _ThreadPool()


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
