"""``ThreadLock``: taking, renewing and releasing the single-writer lease of a thread.

``saver.lock_thread(thread_id)`` returns a :class:`ThreadLock`; entering it (``async with`` or
``with``) yields a :class:`~.lease.Lease`. While the lease is held, every ``put`` and
``put_writes`` the saver makes to the thread carries the lease's *epoch* (:class:`FencedWrites`)
and is checked against the thread's stored epoch inside the durable write's own transaction:
once another worker has taken the lease over (with a larger epoch), this worker's writes are
refused with ``StaleLeaseError`` and write nothing, even if it was paused for minutes and never
noticed.

Where the lease lives:

- **Redis** (when the saver has a Redis tier and it answers): the key
  ``{prefix}{thread_id}:lease`` holds the holder's token and expires after ``ttl_s``; the hash
  ``{prefix}{thread_id}:epoch`` holds the epoch counter; the token also guards the thread's
  cached entries (:class:`~..cache.deferred.DeferredPublication`). Taking, renewing (every
  ``ttl_s / 3``) and releasing are one Lua call each (:mod:`.scripts`).
- **The durable store** (embedded SQLite, no ``redis_url``, or Redis down): the thread's row in
  the ``threads`` table holds the token and expiry next to the fencing epoch, taken with one
  conditional upsert that also raises the epoch.

Epochs form one increasing sequence per thread across both places and across Redis restarts:
see ``docs/lease.md`` for the argument (:mod:`..fencing` has the band arithmetic).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import threading
import time
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from types import TracebackType
from typing import Any, NoReturn

from langgraph_resilient._aio import cancelling, stop_tasks
from langgraph_resilient._redis.wire import LuaScript, as_text
from langgraph_resilient.checkpoint.cache.deferred import DeferredPublication
from langgraph_resilient.checkpoint.cache.redis_link import RedisLink, RedisUnavailable
from langgraph_resilient.checkpoint.fenced import FencedWrites
from langgraph_resilient.checkpoint.fencing import EPOCH_BAND, band_start, redis_floor
from langgraph_resilient.checkpoint.lease import scripts
from langgraph_resilient.checkpoint.lease.attempts import (
    RETRY,
    Held,
    RedisDown,
    is_stale,
    new_token,
)
from langgraph_resilient.checkpoint.lease.holders import (
    LocalLeases,
    enter_context,
    held_lease,
    leave_context,
)
from langgraph_resilient.checkpoint.lease.lease import REDIS_BACKEND, Lease, publish
from langgraph_resilient.checkpoint.tiers import Tiers
from langgraph_resilient.errors import (
    ConfigurationError,
    LockTimeoutError,
    ResilientError,
    TierUnavailableError,
    describe_error,
)
from langgraph_resilient.observability.events import EventKind

log = logging.getLogger("langgraph_resilient.lease")


class ThreadLock(AbstractContextManager[Lease], AbstractAsyncContextManager[Lease]):
    """The single-writer lease of a thread, as a context manager (``saver.lock_thread(...)``).

    ``async with saver.lock_thread(tid) as lease`` in async code, ``with ...`` in sync code
    (the sync form runs the same implementation on the saver's event loop). Entering waits up
    to ``wait_s`` for the lease, then raises ``LockTimeoutError``. Leaving releases it (never
    another holder's). Nesting ``lock_thread`` for the same saver and thread in the same task is
    allowed and yields the outer lease. One ``ThreadLock`` is entered once.
    """

    def __init__(
        self, tiers: Tiers, fenced: FencedWrites, thread_id: str, *, ttl_s: float, wait_s: float
    ) -> None:
        if not ttl_s > 0:
            raise ConfigurationError(f"ttl_s must be > 0 seconds, got {ttl_s!r}")
        if not wait_s >= 0:
            raise ConfigurationError(f"wait_s must be >= 0 seconds, got {wait_s!r}")
        self._tiers = tiers
        self._fenced = fenced
        self.thread_id = thread_id
        self.ttl_s = float(ttl_s)
        self.wait_s = float(wait_s)
        self.lease: Lease | None = None
        """The lease, once entered."""
        self._entered = False
        self._reentrant = False
        self._in_redis = False
        self._in_store = False
        self._guard: tuple[str, str | None] | None = None  # (generation, server) at acquisition
        self._renewer: asyncio.Task[None] | None = None
        self._ctx: contextvars.Token[Any] | None = None
        # Hand-off between the acquisition (on the saver's loop) and a caller that may give up
        # meanwhile (cancelled on another loop, KeyboardInterrupt in sync code): whichever of
        # the two comes second releases a lease nobody will use.
        self._handoff = threading.Lock()
        self._acquired: Lease | None = None
        self._abandoned = False

    # ---------------------------------------------------------------- context manager

    def _begin(self) -> Lease | None:
        if self._entered:
            raise RuntimeError("a ThreadLock is entered once; call saver.lock_thread() again")
        self._entered = True
        held = held_lease(self._tiers.leases, self.thread_id)
        if held is not None:
            self._reentrant = True
            self.lease = held
        return held

    def _push_context(self, lease: Lease) -> None:
        self.lease = lease
        self._ctx = enter_context(self._tiers.leases, self.thread_id, lease)

    def _pop_context(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is not None and self.lease is not None:
            leave_context(ctx, self.lease)

    def _abandon(self) -> None:
        """The caller gave up while acquiring: release the lease if it was acquired anyway."""
        with self._handoff:
            self._abandoned = True
            lease = self._acquired
        loop = self._tiers.bridge.loop
        if lease is not None and not lease.released and loop is not None and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(self._release(None), loop)

    async def __aenter__(self) -> Lease:
        held = self._begin()
        if held is not None:
            return held
        try:
            lease = await self._tiers.bridge.hop(self._acquire())
        except BaseException:
            self._abandon()
            raise
        self._push_context(lease)
        return lease

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reentrant or self.lease is None:
            return
        self._pop_context()
        if self.lease.released:  # the saver was closed first and released it
            return
        # Shielded: a cancelled caller still releases (and stops renewing) the lease.
        await asyncio.shield(self._tiers.bridge.hop(self._release(exc)))

    def __enter__(self) -> Lease:
        held = self._begin()
        if held is not None:
            return held
        try:
            lease = self._tiers.bridge.run(self._acquire())
        except BaseException:
            self._abandon()
            raise
        self._push_context(lease)
        return lease

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reentrant or self.lease is None:
            return
        self._pop_context()
        if self.lease.released:  # the saver was closed first and released it
            return
        self._tiers.bridge.run(self._release(exc))

    # ---------------------------------------------------------------- plumbing

    def _keys(self, link: RedisLink) -> list[str]:
        # The `{thread_id}` hash tag keeps them in one Cluster slot with the Redis tier's keys;
        # the others are the tier's generation (its dirty repair bumps it), writes in flight
        # (where the lease's token guards the thread) and write sequence keys of the thread.
        base = link.thread_base(self.thread_id)
        return [base + "lease", base + "epoch", *link.tier_keys(self.thread_id)]

    def _link(self) -> RedisLink | None:
        tier = self._tiers.redis
        return None if tier is None else tier.link

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000))

    def _redis_usable(self) -> bool:
        link = self._link()
        if link is None:
            return False
        return not link.breaker.is_open or link.breaker.probe_due()

    async def _redis(self, script: LuaScript, args: list[Any]) -> Any:
        """One Lua call on the Redis tier's connection, under its breaker (which repairs dirty
        threads before it trusts Redis again). Raises ``RedisDown`` when Redis is unavailable
        (or the saver has no Redis tier)."""
        link = self._link()
        if link is None:
            raise RedisDown("the saver has no Redis tier")
        try:
            [reply] = await link.script(
                scripts.NAMES[script.sha], lambda: [(script, self._keys(link), args)]
            )
        except RedisUnavailable as exc:
            raise RedisDown(str(exc)) from exc
        return reply

    # ---------------------------------------------------------------- acquire

    async def _acquire(self) -> Lease:
        """Take the lease (on the saver's home loop) and start renewing it."""
        state = self._tiers.leases
        started = time.monotonic()
        deadline = started + self.wait_s
        if not await state.lock_local(self.thread_id, deadline - started):
            self._timeout(started, "another task of this process holds it", None)
        try:
            lease, attempts = await self._acquire_shared(state, started, deadline)
        except BaseException:
            state.unlock_local(self.thread_id)
            raise
        self._fenced.hold(self.thread_id, lease.epoch, self._deferral(lease))
        self.lease = lease
        state.held.add(self)
        self._renewer = asyncio.get_running_loop().create_task(
            self._renew_loop(lease, state), name=f"lease-renew:{self.thread_id}"
        )
        with self._handoff:
            self._acquired = lease
            abandoned = self._abandoned
        if abandoned:  # the caller is gone: nobody will release this lease but us
            await self._release(None)
            raise asyncio.CancelledError()
        publish(
            EventKind.LEASE_ACQUIRED,
            self.thread_id,
            lease.epoch,
            lease.backend,
            waited_s=time.monotonic() - started,
            attempts=attempts,
        )
        return lease

    def _timeout(self, started: float, why: str, cause: BaseException | None) -> NoReturn:
        publish(
            EventKind.LEASE_TIMEOUT,
            self.thread_id,
            None,
            None,
            waited_s=time.monotonic() - started,
            why=why,
        )
        raise LockTimeoutError(
            f"thread {self.thread_id!r}: could not take its lease within wait_s={self.wait_s:g}s "
            f"({why}). Another worker is running this thread: retry later, raise wait_s, or "
            "send a thread's requests to one replica"
        ) from cause

    async def _acquire_shared(
        self, state: LocalLeases, started: float, deadline: float
    ) -> tuple[Lease, int]:
        store = self._tiers.store
        attempt = 0
        last_error: BaseException | None = None
        why = "another worker holds it"
        while True:
            attempt += 1
            outcome: Lease | Held
            try:
                if self._redis_usable():
                    outcome = await self._try_redis(state)
                else:
                    outcome = await self._try_store()
            except RedisDown as exc:
                outcome, last_error = RETRY, exc.__cause__  # the breaker picks the next path
                why = f"Redis failed: {exc}"
            except ResilientError:
                raise
            except Exception as exc:
                if not store.is_transient(exc):
                    raise TierUnavailableError(
                        store.tier_name,
                        f"taking the lease of thread {self.thread_id!r} failed: "
                        f"{describe_error(exc)}",
                    ) from exc
                outcome, last_error = RETRY, exc
                why = f"the {store.tier_name} lease store failed: {describe_error(exc)}"
            if isinstance(outcome, Lease):
                return outcome, attempt
            if outcome is not RETRY:
                why = f"{outcome.where} holds it"
            now = time.monotonic()
            if now >= deadline:
                self._timeout(started, why, last_error)
            delay = min(0.05, self.ttl_s / 4, 0.004 * 2 ** min(attempt, 8))
            delay *= random.uniform(0.5, 1.0)
            if outcome.pttl_ms is not None and outcome.pttl_ms > 0:
                delay = min(delay, outcome.pttl_ms / 1000 + 0.001)
            await asyncio.sleep(max(0.0, min(delay, deadline - now)))

    async def _try_redis(self, state: LocalLeases) -> Lease | Held:
        token = new_token()
        sent = time.monotonic()
        args = [token, self._ttl_ms, EPOCH_BAND, EPOCH_BAND, *state.orphans(self.thread_id)]
        try:
            reply = await self._redis(scripts.ACQUIRE, args)
        except RedisDown:
            state.add_orphan(self.thread_id, token, self.ttl_s)
            raise
        if int(reply[0]) == 0:
            return Held(int(reply[1]))
        epoch, status, gen = int(reply[1]), int(reply[2]), reply[3]
        if status != 1:
            try:
                held = await self._confirm(token, epoch, gen, status == 2)
            except BaseException:
                await self._release_redis_quietly(state, token)
                raise
            if held is not None:
                return held
        self._in_redis = True
        link = self._link()
        self._guard = (as_text(gen), None if link is None else link.server)
        return Lease(self.thread_id, token, epoch, REDIS_BACKEND, self.ttl_s, sent + self.ttl_s)

    def _deferral(self, lease: Lease) -> DeferredPublication | None:
        if self._guard is None or not self._in_redis:
            return None
        return DeferredPublication.for_lease(lease, *self._guard, lambda: self._in_redis)

    async def _confirm(
        self,
        token: str,
        epoch: int,
        gen: Any,
        revalidate: bool,
    ) -> Held | None:
        """Check a fresh Redis epoch against the durable store (None: good to hand out).

        An unconfirmed band is confirmed by raising the store's epoch to the band's first
        number, which the store does only if its epoch is lower and no live store lease exists.
        A band the store already reached is skipped (the counter moves to the next odd band
        above the store's epoch): Redis may have lost a counter that had handed out epochs in it.
        A confirmed band whose generation changed (the thread was leased or written while Redis
        was unreachable) is kept if the store's epoch is still below ``epoch``.
        """
        band = band_start(epoch)
        result = await self._tiers.store.lease_raise(self.thread_id, band, token)
        if result.held:
            await self._redis(scripts.FLOOR, [0, token])
            return Held(None, f"a {self._tiers.store.tier_name} lease row")
        if result.raised or (revalidate and result.epoch < epoch):
            if int(await self._redis(scripts.CONFIRM, [token, band, gen])):
                return None
            return RETRY  # the key vanished meanwhile (Redis restarted): start over
        floor = redis_floor(max(result.epoch, epoch))
        await self._redis(scripts.FLOOR, [floor, token])
        return RETRY

    async def _try_store(self) -> Lease | Held:
        store = self._tiers.store
        token = new_token()
        sent = time.monotonic()
        epoch = await store.lease_acquire(self.thread_id, token, self.ttl_s)
        if epoch is None:
            return Held(None, f"another worker ({store.tier_name} lease row)")
        self._in_store = True
        lease = Lease(self.thread_id, token, epoch, store.tier_name, self.ttl_s, sent + self.ttl_s)
        if self._link() is not None:
            await self._mark_dirty(lease)
            publish(
                EventKind.LEASE_FAILOVER,
                self.thread_id,
                epoch,
                store.tier_name,
                reason="Redis unavailable: lease taken in the durable store",
            )
        return lease

    async def _mark_dirty(self, lease: Lease) -> None:
        """Have the Redis tier's repair bump the thread's generation once Redis answers, so
        Redis acquirers check the store (and wait for this lease) instead of trusting their
        confirmed band. Best effort: a failure only delays that check."""
        try:
            await self._tiers.store.mark_dirty([self.thread_id])
        except Exception as exc:
            log.warning("thread %r: could not mark the lease dirty: %r", self.thread_id, exc)

    # ---------------------------------------------------------------- renew

    async def _renew_loop(self, lease: Lease, state: LocalLeases) -> None:
        interval = self.ttl_s / 3
        while not cancelling():
            await asyncio.sleep(interval)
            sent = time.monotonic()
            try:
                alive = await self._renew_once(lease, state)
            except Exception as exc:
                if time.monotonic() >= lease.expires_at:
                    lease._mark_lost(f"could not renew it before it expired: {exc!r}")
                    return
                log.warning("thread %r: lease renewal failed, retrying: %r", lease.thread_id, exc)
                interval = max(0.01, min(self.ttl_s / 3, lease.remaining_s / 3))
                continue
            if not alive:
                return
            lease.expires_at = sent + self.ttl_s
            interval = self.ttl_s / 3

    async def _renew_once(self, lease: Lease, state: LocalLeases) -> bool:
        """Renew wherever the lease lives; False (and the lease marked lost) when it is gone."""
        store = self._tiers.store
        if self._in_redis:
            try:
                renewed = int(await self._redis(scripts.RENEW, [lease.token, self._ttl_ms]))
            except RedisDown as exc:
                if not self._in_store:
                    # Redis failed mid-lease: move the lease, same epoch, to the durable store.
                    if not await store.lease_hold(
                        lease.thread_id, lease.token, lease.epoch, self.ttl_s
                    ):
                        lease._mark_lost(
                            f"Redis failed ({exc}) and the {store.tier_name} lease row is held by "
                            "another worker or has a newer epoch"
                        )
                        return False
                    await self._mark_dirty(lease)
                    self._in_store = True
                    lease.backend = store.tier_name
                    log.warning(
                        "thread %r: Redis failed (%s); lease (epoch %d) moved to %s",
                        lease.thread_id,
                        exc,
                        lease.epoch,
                        store.tier_name,
                    )
                    publish(
                        EventKind.LEASE_FAILOVER,
                        lease.thread_id,
                        lease.epoch,
                        store.tier_name,
                        reason=f"Redis failed while the lease was held: {exc}",
                    )
                    return True
            else:
                if not renewed:
                    self._in_redis = False
                    if not self._in_store:
                        lease._mark_lost("its Redis key expired or another worker took it")
                        return False
        if self._in_store:
            if not await store.lease_hold(lease.thread_id, lease.token, lease.epoch, self.ttl_s):
                lease._mark_lost(
                    f"the {store.tier_name} lease row was taken over (a newer epoch or another "
                    "holder)"
                )
                return False
            if not self._in_redis and self._redis_usable():
                await self._claim_redis(lease, state)
        return True

    async def _claim_redis(self, lease: Lease, state: LocalLeases) -> None:
        """A store-held lease sees Redis again: let Redis acquirers wait for it (best effort)."""
        try:
            claimed = await self._redis(
                scripts.CLAIM, [redis_floor(lease.epoch), lease.token, self._ttl_ms]
            )
        except RedisDown:
            state.add_orphan(self.thread_id, lease.token, self.ttl_s)
            return
        self._in_redis = bool(int(claimed))

    # ---------------------------------------------------------------- release

    async def _release_redis_quietly(
        self, state: LocalLeases, token: str, *, clean: bool = True
    ) -> None:
        # not clean: Redis may hold a stale state of the thread (its generation is bumped)
        try:
            await self._redis(scripts.RELEASE, [token, "1" if clean else "0"])
        except Exception as exc:
            # The key expires by itself; until then this process's next acquisition of the
            # thread takes it over instead of waiting for it.
            state.add_orphan(self.thread_id, token, self.ttl_s)
            log.debug("thread %r: lease release in Redis failed: %r", self.thread_id, exc)

    async def release_lost(self, reason: str) -> None:
        """Mark the lease lost for ``reason`` and release it now (the saver is closing)."""
        lease = self.lease
        if lease is None or lease.released:
            return
        lease._mark_lost(reason)
        await self._release(None)

    async def _release(self, exc: BaseException | None) -> None:
        """Stop renewing, release wherever the lease lives, forget its epoch (home loop)."""
        lease = self.lease
        assert lease is not None
        if lease.released:
            return
        lease.released = True
        state = self._tiers.leases
        state.held.discard(self)
        renewer, self._renewer = self._renewer, None
        await stop_tasks([renewer], what=f"thread {self.thread_id!r}: lease renewal", log=log)
        try:
            clean = await self._fenced.publish_before_release(
                self.thread_id, lost=lease.lost or is_stale(exc) or not self._in_redis
            )
            if self._in_redis and is_stale(exc) and not lease.lost:
                await self._repair_counter(lease, state)
            if self._in_redis:
                await self._release_redis_quietly(state, lease.token, clean=clean)
            if self._in_store:
                try:
                    await self._tiers.store.lease_release(self.thread_id, lease.token)
                except Exception as error:
                    log.warning(
                        "thread %r: lease release in %s failed (it expires in %.1fs): %r",
                        self.thread_id,
                        self._tiers.store.tier_name,
                        self.ttl_s,
                        error,
                    )
        finally:
            self._fenced.forget(self.thread_id, lease.epoch)
            state.unlock_local(self.thread_id)
            publish(
                EventKind.LEASE_RELEASED,
                self.thread_id,
                lease.epoch,
                lease.backend,
                held_s=time.monotonic() - lease.acquired_at,
            )

    async def _repair_counter(self, lease: Lease, state: LocalLeases) -> None:
        """A write under a Redis lease we still hold was refused as stale: the Redis counter is
        behind the store's epoch (a store lease was used while this Redis stayed up, and the
        tier's dirty-thread repair has not run yet). Move it above, so the next acquisition gets
        a valid epoch, and drop the thread's cached entries, which are as stale as the counter."""
        try:
            if not int(await self._redis(scripts.RENEW, [lease.token, self._ttl_ms])):
                return  # taken over, not behind
            stored = await self._tiers.store.thread_epoch(self.thread_id)
            if stored > lease.epoch:
                await self._redis(scripts.FLOOR, [redis_floor(stored), ""])
                link = self._link()
                if link is not None:
                    await link.invalidate([self.thread_id])
                log.warning(
                    "thread %r: the Redis epoch counter (%d) was behind the %s epoch (%d); "
                    "repaired, the next lock_thread gets a valid epoch",
                    self.thread_id,
                    lease.epoch,
                    self._tiers.store.tier_name,
                    stored,
                )
        except Exception as exc:
            log.warning("thread %r: could not repair the epoch counter: %r", self.thread_id, exc)
