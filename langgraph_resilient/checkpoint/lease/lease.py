"""``Lease``: the single-writer lease of one thread, as its holder sees it; and the events
and metrics every lease produces.

Leases report what they do on the :class:`~langgraph_resilient.EventBus` (``LEASE_*`` kinds,
see :class:`~langgraph_resilient.EventKind`; source = the thread id) and in the
``langgraph_lease_*`` Prometheus metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from langgraph_resilient.observability import metrics
from langgraph_resilient.observability.events import EventBus, EventKind

log = logging.getLogger("langgraph_resilient.lease")

REDIS_BACKEND = "redis"
"""``Lease.backend`` of a lease held in Redis (else the durable store's name)."""


def publish(
    kind: EventKind, thread_id: str, epoch: int | None, backend: str | None, **detail: Any
) -> None:
    """Count a lease event in the metrics and publish it on the default event bus."""
    if kind is EventKind.LEASE_ACQUIRED:
        contended = "true" if detail.get("attempts", 1) > 1 else "false"
        metrics.LEASE_ACQUISITIONS.labels(contended).inc()
        metrics.LEASE_WAIT_SECONDS.observe(detail.get("waited_s", 0.0))
    elif kind is EventKind.LEASE_LOST:
        metrics.LEASE_LOST.inc()
    elif kind is EventKind.LEASE_FAILOVER:
        metrics.LEASE_FAILOVERS.inc()
    elif kind is EventKind.LEASE_TIMEOUT:
        metrics.LEASE_TIMEOUTS.inc()
        metrics.LEASE_WAIT_SECONDS.observe(detail.get("waited_s", 0.0))
    EventBus.default().publish(kind, thread_id, epoch=epoch, backend=backend, **detail)


class Lease:
    """The single-writer lease of one thread, held by this process (from ``lock_thread``).

    While you hold it, every checkpoint write the saver makes to ``thread_id`` is fenced with
    ``epoch``. If the lease is lost (this worker stalled past ``ttl_s`` and another worker took
    it, or the key vanished), ``lost`` becomes true as soon as the background renewal notices
    (within ``ttl_s / 3``): stop working on the thread. Writes made anyway are refused with
    ``StaleLeaseError`` once the new holder has written, and write nothing.

    Ways to learn about a loss: poll ``lease.lost``; ``lease.lost_event.wait(timeout)`` (sync);
    ``await lease.wait_lost()`` (async, any event loop); ``lease.on_lost(callback)``.
    """

    def __init__(
        self, thread_id: str, token: str, epoch: int, backend: str, ttl_s: float, expires_at: float
    ) -> None:
        self.thread_id = thread_id
        """The thread this lease is for."""
        self.token = token
        """Unique token of this holding (``<pid>-<random>``), stored in Redis or the row."""
        self.epoch = epoch
        """The fencing epoch: larger than every epoch handed out before for this thread."""
        self.backend = backend
        """Where the lease lives now: ``"redis"``, ``"postgres"`` or ``"sqlite"``."""
        self.ttl_s = ttl_s
        """Lease time to live; renewed every ``ttl_s / 3`` while held."""
        self.expires_at = expires_at
        """``time.monotonic()`` by which the lease expires unless renewed (it is renewed in the
        background; see ``remaining_s``)."""
        self.acquired_at = time.monotonic()
        """``time.monotonic()`` when the lease was acquired."""
        self.lost_reason: str | None = None
        """Why the lease was lost, or ``None``."""
        self.released = False
        """True once the ``with`` block that took the lease has exited."""
        self._lost = threading.Event()
        self._callbacks: list[Callable[[Lease], None]] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "lost" if self.lost else "released" if self.released else "held"
        return (
            f"Lease(thread_id={self.thread_id!r}, epoch={self.epoch}, backend={self.backend!r}, "
            f"{state})"
        )

    @property
    def lost(self) -> bool:
        """True once the holder learned that the lease expired or was taken over."""
        return self._lost.is_set()

    @property
    def lost_event(self) -> threading.Event:
        """Set when the lease is lost; ``lease.lost_event.wait(timeout)`` from sync code."""
        return self._lost

    @property
    def remaining_s(self) -> float:
        """Seconds until the lease expires unless renewed (negative: past its expiry)."""
        return self.expires_at - time.monotonic()

    def on_lost(self, callback: Callable[[Lease], None]) -> None:
        """Call ``callback(lease)`` once if the lease is lost (at once if it already is).

        The callback runs on the saver's event loop thread: keep it quick (set a flag, cancel a
        task with ``loop.call_soon_threadsafe``...). Exceptions are logged and swallowed.
        """
        with self._lock:
            if not self._lost.is_set():
                self._callbacks.append(callback)
                return
        self._call(callback)

    def _call(self, callback: Callable[[Lease], None]) -> None:
        try:
            callback(self)
        except Exception:
            log.exception("lease on_lost callback %r failed", callback)

    async def wait_lost(self) -> None:
        """Return once the lease is lost. Works from any event loop (not only the saver's);
        bound it with ``asyncio.timeout(...)`` or run it as a task next to your work."""
        if self.lost:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not done.done():
                done.set_result(None)

        def wake(_: Lease) -> None:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(settle)

        self.on_lost(wake)
        try:
            await done
        finally:
            with self._lock:
                if wake in self._callbacks:
                    self._callbacks.remove(wake)

    def _mark_lost(self, reason: str) -> None:
        with self._lock:
            if self._lost.is_set():
                return
            self.lost_reason = reason
            self._lost.set()
            callbacks, self._callbacks = self._callbacks, []
        log.warning(
            "thread %r: lease (epoch %d) lost: %s. Further writes under it will be refused with "
            "StaleLeaseError once the new holder writes",
            self.thread_id,
            self.epoch,
            reason,
        )
        publish(EventKind.LEASE_LOST, self.thread_id, self.epoch, self.backend, reason=reason)
        for callback in callbacks:
            self._call(callback)
