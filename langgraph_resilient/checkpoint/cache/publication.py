"""How a write reaches Redis without the acknowledgement waiting for Redis.

A write is *announced* in parallel with its durable commit: its token goes into the thread's
set of writes in flight (``f``, see :mod:`.scripts`), and from then on no replica trusts what
Redis holds for the thread. The write is acknowledged once the commit is done and the
announcement answered (it is faster than a commit); its *publication*, which takes the token out
again, is queued and sent after the acknowledgement, in the next round trip this process makes
to Redis anyway (the next announcement or read) or, failing one, at the next loop turn.

A token expires (``IN_FLIGHT_TTL_S``): a writer that died between its commit and its
publication leaves one behind, and the first read after it expired bumps the thread's
generation. A commit that took so long that its token may have expired is not trusted to have
kept readers away: the writer abandons the announcement (a generation bump) before it
acknowledges.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langgraph_resilient._redis.wire import ScriptCall, as_text
from langgraph_resilient.checkpoint.cache.redis_link import RedisLink, RedisUnavailable
from langgraph_resilient.checkpoint.cache.scripts import ABANDON, ANNOUNCE

log = logging.getLogger("langgraph_resilient.redis")

IN_FLIGHT_TTL_S = 30.0
"""How long an announced write keeps readers of its thread away from Redis at most. A commit
slower than half of it is abandoned (a generation bump) before it is acknowledged."""


@dataclass(slots=True)
class Pending:
    """Script calls to send after an acknowledgement: composed when they are sent (the keys
    name the server then in use), their replies handed to ``done``."""

    threads: Sequence[str]
    compose: Callable[[], list[ScriptCall]]
    done: Callable[[list[Any]], None] = lambda replies: None


@dataclass(slots=True)
class Announcement:
    """Writes of some threads announced under one token, in parallel with their commit."""

    token: str
    threads: list[str]
    started: float
    reply: asyncio.Task[dict[str, str] | None]
    gens: dict[str, str] = field(default_factory=dict)
    """Each thread's generation when the announcement arrived (once confirmed)."""


class Publications:
    """The queue of publications not sent yet, and the announcements that carry them."""

    def __init__(
        self, link: RedisLink, on_failure: Callable[[Sequence[str]], Awaitable[None]]
    ) -> None:
        self._link = link
        self._on_failure = on_failure
        self._queue: list[Pending] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, pending: Pending) -> None:
        """Queue calls; they leave with the next round trip, or at the next loop turn."""
        self._queue.append(pending)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start_flush)

    async def send_with(self, name: str, compose: Callable[[], list[ScriptCall]]) -> list[Any]:
        """Send ``compose``'s calls after every queued publication, in one round trip; returns
        the replies of ``compose``'s calls (raises ``RedisUnavailable``, the publications being
        then recorded as failed)."""
        taken, self._queue = self._queue, []
        if not taken:
            return await self._link.script(name, compose)
        sizes: list[int] = []

        def composed() -> list[ScriptCall]:
            sizes.clear()
            calls: list[ScriptCall] = []
            for pending in taken:
                part = pending.compose()
                sizes.append(len(part))
                calls += part
            return calls + compose()

        try:
            replies = await self._link.script(name, composed)
        except RedisUnavailable:
            await self._failed(taken)
            raise
        offset = 0
        for pending, size in zip(taken, sizes, strict=True):
            pending.done(replies[offset : offset + size])
            offset += size
        return replies[offset:]

    async def flush(self) -> None:
        """Send every queued publication now (failures are recorded, never raised)."""
        if self._queue:
            with contextlib.suppress(RedisUnavailable):  # recorded by send_with
                await self.send_with("publish", list)

    async def drain(self, timeout_s: float) -> None:
        """Send what is queued and wait for the sends in progress (at close), bounded."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._queue or self._tasks:
                    await self.flush()
                    if self._tasks:
                        await asyncio.wait(list(self._tasks))
        except TimeoutError:
            threads = sorted({t for pending in self._queue for t in pending.threads})
            log.warning("closing before %d publications reached Redis", len(self._queue))
            self._queue = []
            await self._on_failure(threads)

    def _start_flush(self) -> None:
        self._scheduled = False
        if not self._queue:
            return
        task = asyncio.get_running_loop().create_task(self.flush())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _failed(self, taken: Sequence[Pending]) -> None:
        await self._on_failure(sorted({t for pending in taken for t in pending.threads}))

    # ---------------------------------------------------------------- announcements

    def announce(self, thread_ids: Sequence[str]) -> Announcement:
        """Start announcing writes to ``thread_ids`` (answered in the background: run the
        commit meanwhile, then :meth:`confirm`)."""
        token = secrets.token_hex(8)
        threads = sorted(set(thread_ids))
        ttl_ms = int(IN_FLIGHT_TTL_S * 1000)

        def compose() -> list[ScriptCall]:
            return [(ANNOUNCE, self._link.tier_keys(t), [token, ttl_ms]) for t in threads]

        async def send() -> dict[str, str] | None:
            try:
                replies = await self.send_with("announce", compose)
            except RedisUnavailable:
                return None
            return {t: as_text(r) for t, r in zip(threads, replies, strict=True)}

        task = asyncio.get_running_loop().create_task(send())
        return Announcement(token, threads, time.monotonic(), task)

    async def confirm(self, announcement: Announcement) -> bool:
        """After the commit: whether the announcement holds (then publish under its token).
        False when it failed (the threads are recorded dirty) or when the commit took so long
        that the token may have expired (then the announcement is abandoned first)."""
        gens = await announcement.reply
        if gens is None:
            await self._on_failure(announcement.threads)
            return False
        if time.monotonic() - announcement.started > IN_FLIGHT_TTL_S / 2:
            await self.abandon(announcement, wait=True)
            return False
        announcement.gens = gens
        return True

    async def abandon(self, announcement: Announcement, *, wait: bool = False) -> None:
        """The announced writes will not be published (their commit failed, or it was slow):
        take the token out and bump the threads' generations; ``wait`` for Redis to answer
        (else it leaves with the next round trip)."""
        if await announcement.reply is None:
            return  # nothing was announced; the failure was recorded
        token = announcement.token
        pending = Pending(
            announcement.threads,
            lambda: [(ABANDON, self._link.tier_keys(t), [token]) for t in announcement.threads],
        )
        if not wait:
            self.add(pending)
            return
        self._queue.append(pending)
        await self.flush()
