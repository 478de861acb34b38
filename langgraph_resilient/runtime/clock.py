"""Clocks: the real one, and a manual one so tests (yours and ours) never sleep for real."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Protocol, runtime_checkable

__all__ = ["SYSTEM_CLOCK", "Clock", "ManualClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """What the policies need from time: a monotonic reading and a way to wait."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""
        ...

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds``."""
        ...


class SystemClock:
    """Real time: ``time.monotonic``, ``time.sleep`` and ``asyncio.sleep``."""

    __slots__ = ()

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """``time.sleep(seconds)``."""
        if seconds > 0:
            time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        """``await asyncio.sleep(seconds)``."""
        await asyncio.sleep(max(seconds, 0.0))


SYSTEM_CLOCK = SystemClock()


class ManualClock:
    """A clock that only moves when told to: pass it as ``clock=`` to test policies instantly.

    ``sleep``/``asleep`` do not wait; they advance the clock by the requested amount and
    record it in :attr:`sleeps`, so a retry with backoff finishes at once and the test can
    assert on the delays. ``advance(seconds)`` moves time forward explicitly (to let a
    breaker's open period pass, for instance). Thread-safe.

    Example::

        clock = ManualClock()
        breaker = CircuitBreaker("llm", open_for_s=30, clock=clock)
        ...                      # trip it
        clock.advance(30)        # the breaker now lets half-open probes through
    """

    __slots__ = ("_lock", "_now", "sleeps")

    def __init__(self, start: float = 1000.0) -> None:
        self._lock = threading.Lock()
        self._now = start
        #: Every duration passed to ``sleep``/``asleep``, in call order.
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        """The current manual time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (must not be negative)."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards; pass seconds >= 0")
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        """Record the sleep and advance time; returns immediately."""
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(seconds, 0.0)

    async def asleep(self, seconds: float) -> None:
        """Record the sleep, advance time, and yield to the event loop once."""
        self.sleep(seconds)
        await asyncio.sleep(0)
