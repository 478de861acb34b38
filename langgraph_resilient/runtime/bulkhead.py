"""``Bulkhead``: at most ``max_concurrent`` calls at once, at most ``max_queued`` waiting.

One bulkhead limits sync callers (threads) and async callers (tasks, on any event loop)
together: slots are counted under a thread lock and handed over first-in first-out.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any

from langgraph_resilient.errors import BulkheadFullError, ConfigurationError

__all__ = ["Bulkhead"]


class _SyncWaiter:
    __slots__ = ("granted", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.granted = False

    def grant(self) -> None:
        self.granted = True
        self.lock.release()


class _AsyncWaiter:
    __slots__ = ("future", "granted", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.granted = False

    def grant(self) -> None:
        self.granted = True
        self.loop.call_soon_threadsafe(_resolve, self.future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Bulkhead:
    """Limit concurrent calls to a dependency so one slow service cannot take every worker.

    Args:
        max_concurrent: calls allowed to run at once.
        max_queued: calls allowed to wait for a slot; one more is rejected at once with
            ``BulkheadFullError``. 0 means "reject when full".
        max_wait_s: a queued call that waited this long is rejected with ``BulkheadFullError``
            (None: wait as long as it takes).

    Share one ``Bulkhead`` object between the nodes that use the same dependency; slots are
    counted per object, across threads and event loops, in one process.
    """

    __slots__ = ("_active", "_lock", "_waiters", "max_concurrent", "max_queued", "max_wait_s")

    def __init__(
        self, max_concurrent: int, max_queued: int = 0, *, max_wait_s: float | None = None
    ) -> None:
        if max_concurrent < 1 or max_queued < 0:
            raise ConfigurationError(
                "Bulkhead needs max_concurrent >= 1 and max_queued >= 0; "
                f"got {max_concurrent}, {max_queued}"
            )
        if max_wait_s is not None and max_wait_s <= 0:
            raise ConfigurationError("Bulkhead(max_wait_s=...) must be positive or None")
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.max_wait_s = max_wait_s
        self._lock = threading.Lock()
        self._active = 0
        self._waiters: deque[Any] = deque()

    def __repr__(self) -> str:
        return (
            f"Bulkhead(max_concurrent={self.max_concurrent}, max_queued={self.max_queued}, "
            f"active={self._active}, queued={len(self._waiters)})"
        )

    @property
    def active(self) -> int:
        """Calls holding a slot right now."""
        return self._active

    @property
    def queued(self) -> int:
        """Calls waiting for a slot right now."""
        return len(self._waiters)

    def _full(self, reason: str) -> BulkheadFullError:
        err = BulkheadFullError(
            f"bulkhead full ({self.max_concurrent} running, {self.max_queued} queued): "
            f"{reason}; retry later or raise max_concurrent/max_queued"
        )
        err.reason = reason  # type: ignore[attr-defined]
        return err

    def _enqueue(self, waiter: Any) -> bool:
        """Take a slot (True) or queue ``waiter`` (False); raise when the queue is full."""
        with self._lock:
            if self._active < self.max_concurrent:
                self._active += 1
                return True
            if len(self._waiters) >= self.max_queued:
                raise self._full("queue_full")
            self._waiters.append(waiter)
            return False

    def try_acquire(self) -> None:
        """Take a slot now or raise ``BulkheadFullError`` (never waits)."""
        with self._lock:
            if self._active < self.max_concurrent:
                self._active += 1
                return
        raise self._full("queue_full")

    def acquire(self) -> None:
        """Take a slot, waiting in the queue if allowed; raise ``BulkheadFullError`` if not."""
        with self._lock:
            if self._active < self.max_concurrent:
                self._active += 1
                return
        waiter = _SyncWaiter()
        if self._enqueue(waiter):
            return
        timeout = -1.0 if self.max_wait_s is None else self.max_wait_s
        if waiter.lock.acquire(timeout=timeout):
            return
        if self._give_up(waiter):
            raise self._full("wait_timeout")

    async def aacquire(self) -> None:
        """Async :meth:`acquire`: waits without blocking the event loop."""
        with self._lock:
            if self._active < self.max_concurrent:
                self._active += 1
                return
        waiter = _AsyncWaiter(asyncio.get_running_loop())
        if self._enqueue(waiter):
            return
        try:
            if self.max_wait_s is None:
                await waiter.future
            else:
                async with asyncio.timeout(self.max_wait_s):
                    await waiter.future
        except TimeoutError:
            if self._give_up(waiter):
                raise self._full("wait_timeout") from None
            return  # the slot arrived as the wait ran out: keep it
        except asyncio.CancelledError:
            if not self._give_up(waiter):
                self.release()  # we were handed a slot we will not use: pass it on
            raise

    def _give_up(self, waiter: Any) -> bool:
        """Leave the queue; False if a slot was already handed to ``waiter``."""
        with self._lock:
            if waiter.granted:
                return False
            self._waiters.remove(waiter)
            return True

    def release(self) -> None:
        """Give a slot back; the oldest waiter (if any) gets it."""
        with self._lock:
            if self._waiters:
                waiter = self._waiters.popleft()
                waiter.grant()  # the slot moves to the waiter: _active unchanged
                return
            self._active -= 1
