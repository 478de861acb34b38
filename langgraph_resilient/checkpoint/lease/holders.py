"""What one process knows about the leases it holds or is taking.

- Holders of one thread within a saver queue on an in-process lock, so they never poll Redis
  for each other.
- A nested ``lock_thread`` of the same saver and thread in the same task (or in tasks it
  started, such as LangGraph's node tasks) finds the outer lease in a context variable and
  yields it instead of deadlocking.
- Tokens whose Redis call timed out may still have set a lease (Redis may run the call
  anyway): this process's next acquisition of the thread takes such a lease over instead of
  waiting for its expiry (*orphans*).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from typing import Any, Protocol

from langgraph_resilient._aio import STOP_TIMEOUT_S
from langgraph_resilient.checkpoint.lease.lease import Lease

log = logging.getLogger("langgraph_resilient.lease")


class HeldLock(Protocol):
    """A lock holding a lease (``ThreadLock``), as the close of its saver sees it."""

    thread_id: str

    async def release_lost(self, reason: str) -> None:
        """Mark the lease lost for ``reason`` and release it at once."""


_HELD: contextvars.ContextVar[tuple[tuple[int, str, Lease], ...]] = contextvars.ContextVar(
    "langgraph_resilient_held_leases", default=()
)
"""Leases entered in this context (task/thread): ``(id of their owner, thread, lease)``."""


def held_lease(owner: Any, thread_id: str) -> Lease | None:
    """The lease this context already holds on ``thread_id`` through ``owner`` (a saver's
    :class:`LocalLeases`), if any."""
    for owner_id, tid, lease in _HELD.get():
        if owner_id == id(owner) and tid == thread_id and not lease.released:
            return lease
    return None


def enter_context(owner: Any, thread_id: str, lease: Lease) -> contextvars.Token[Any]:
    """Record ``lease`` as held in this context (undone by :func:`leave_context`)."""
    return _HELD.set((*_HELD.get(), (id(owner), thread_id, lease)))


def leave_context(token: contextvars.Token[Any], lease: Lease) -> None:
    """Undo :func:`enter_context` (also when left from another context: a generator closed
    elsewhere)."""
    try:
        _HELD.reset(token)
    except ValueError:
        _HELD.set(tuple(entry for entry in _HELD.get() if entry[2] is not lease))


class LocalLeases:
    """Lease state of one saver on its home loop: in-process locks, orphans, held locks."""

    def __init__(self) -> None:
        self.local: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self.held: set[HeldLock] = set()
        """Locks holding a lease now (released by :meth:`release_all` if still held)."""
        self._orphans: dict[str, list[tuple[str, float]]] = {}

    def add_orphan(self, thread_id: str, token: str, ttl_s: float) -> None:
        """A Redis call that may set ``token``'s lease timed out: Redis may still run it."""
        self._orphans.setdefault(thread_id, []).append((token, time.monotonic() + ttl_s + 1))

    def orphans(self, thread_id: str) -> list[str]:
        """This process's tokens that may hold an unwanted lease on the thread (until expiry)."""
        entries = self._orphans.get(thread_id)
        if not entries:
            return []
        now = time.monotonic()
        live = [(token, until) for token, until in entries if until > now]
        if live:
            self._orphans[thread_id] = live
        else:
            del self._orphans[thread_id]
        return [token for token, _ in live]

    async def lock_local(self, thread_id: str, limit_s: float) -> bool:
        """Serialize the holders of one thread within this saver (no Redis polling for them);
        False when ``limit_s`` passed first."""
        entry = self.local.get(thread_id)
        if entry is None:
            entry = self.local[thread_id] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            if not lock.locked():
                await lock.acquire()
            else:
                async with asyncio.timeout(max(limit_s, 0.0)):
                    await lock.acquire()
        except TimeoutError:
            self._forget(thread_id, entry)
            return False
        except BaseException:
            self._forget(thread_id, entry)
            raise
        return True

    def unlock_local(self, thread_id: str) -> None:
        """Let the next holder of this process in."""
        entry = self.local.get(thread_id)
        if entry is None:
            return
        entry[0].release()
        self._forget(thread_id, entry)

    def _forget(self, thread_id: str, entry: tuple[asyncio.Lock, list[int]]) -> None:
        entry[1][0] -= 1
        if entry[1][0] <= 0 and self.local.get(thread_id) is entry:
            del self.local[thread_id]

    async def release_all(self, reason: str) -> None:
        """Release every lease still held (their ``with`` blocks have not exited), each within
        a time limit: the saver is closing, and a closed saver renews nothing, so each is
        marked lost and its keys are freed now rather than at their expiry."""
        for lock in list(self.held):
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await lock.release_lost(reason)
            except Exception:
                log.exception("thread %r: releasing the lease at close failed", lock.thread_id)
