"""The saver's link to one Redis deployment: keys, server identity, breaker and repair.

Every call of the Redis tier and of the thread lease goes through a :class:`RedisLink`:

- **Keys.** A thread's keys live under ``{prefix}{thread_id}:`` (the ``{thread_id}`` hash tag
  puts them in one Cluster slot). Cache entries add the ``run_id`` of the server they were
  written to (``{prefix}{thread_id}:<server>:``), so a restarted or failed-over server, which
  may have lost writes the old one acknowledged, is an empty cache rather than a stale one; the
  lease's keys (``lease``, ``epoch``) outlive a server change. When the server changes, the
  entries earlier servers left on the new one are deleted in the background (SCAN + UNLINK).
- **Breaker.** Failures and timeouts open :class:`TierBreaker`; while it is open callers get
  :class:`RedisUnavailable` at once and use the durable tier alone, and each thread written
  meanwhile is recorded as *dirty* in the durable tier. Before the breaker closes again (and
  every ``repair_interval_s``, for outages only other replicas saw), the link bumps the cache
  generation of every dirty thread, so no replica serves a head an outage-time write
  superseded.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.exceptions import RedisClusterException, RedisError

from langgraph_resilient._aio import cancelling, stop_tasks
from langgraph_resilient._redis.breaker import TierBreaker
from langgraph_resilient._redis.client import RedisSettings
from langgraph_resilient._redis.wire import ScriptCall, ServerChanged, script_runner
from langgraph_resilient.checkpoint.durable.store import DurableStore
from langgraph_resilient.errors import describe_error
from langgraph_resilient.observability import metrics

log = logging.getLogger("langgraph_resilient.redis")
T = TypeVar("T")

_SERVER_SEGMENT = re.compile(rb"\}:([0-9a-f]{40}):")


def _left_by_another_server(key: bytes, server_id: str) -> bool:
    """A cache key (``{prefix}{thread}:<run_id>:...``) written for another server."""
    found = _SERVER_SEGMENT.search(key)
    return found is not None and found.group(1).decode() != server_id


class RedisUnavailable(Exception):
    """Redis failed, timed out, or its breaker is open: use the durable tier."""


class RedisLink:
    """Calls to one Redis deployment, under a breaker, with keys named for its server."""

    def __init__(
        self,
        client: Any,
        settings: RedisSettings,
        *,
        prefix: str,
        store: DurableStore,
        breaker: TierBreaker | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.prefix = prefix
        self.store = store
        """Where dirty threads are recorded (the durable tier)."""
        self.breaker = breaker or TierBreaker()
        self.repair_interval_s = settings.repair_interval_s
        self.on_new_server: Callable[[], None] = lambda: None
        """Called when the link starts using another server (the L1 cache clears itself)."""
        self._scripts = script_runner(client, settings.socket_timeout_s * 2)
        self._incarnation: str | None = None
        """The Redis server (its ``run_id``) whose cache entries this link uses."""
        self._recovering = asyncio.Lock()
        self._repair_task: asyncio.Task[None] | None = None
        self._sweep_task: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- keys

    def thread_base(self, thread_id: str) -> str:
        """Keys that outlive a server change: the thread's lease and epoch (lease.py)."""
        return f"{self.prefix}{{{thread_id}}}:"

    def base(self, thread_id: str) -> str:
        """Cache keys, scoped to the server they were written to."""
        return f"{self.prefix}{{{thread_id}}}:{self._incarnation or '-'}:"

    def gen_key(self, thread_id: str) -> str:
        """The thread's cache generation (every cache key embeds it)."""
        return self.base(thread_id) + "g"

    def tier_keys(self, thread_id: str) -> list[str]:
        """The KEYS of the tier's scripts: the generation ``g``, the writes in flight ``f`` and
        the write sequence ``s`` (see cache/scripts.py)."""
        base = self.base(thread_id)
        return [base + "g", base + "f", base + "s"]

    def _adopt(self, server_id: str) -> None:
        """Use the cache of another Redis server from now on (a restart or a failover)."""
        if self._incarnation is not None:
            log.warning(
                "Redis server changed (%s, was %s): a restart or a failover may have lost "
                "cache writes, so the tier starts from an empty cache",
                server_id,
                self._incarnation,
            )
        changed = self._incarnation is not None
        self._incarnation = server_id
        self.on_new_server()
        if changed and (self._sweep_task is None or self._sweep_task.done()):
            self._sweep_task = asyncio.get_running_loop().create_task(self._sweep(server_id))

    async def _sweep(self, server_id: str) -> None:
        """Delete what earlier servers' entries left on this one: a promoted replica holds a
        copy of them, unreachable now, that would take memory until the entries' TTL."""
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in self.prefix) + "*"
        cursor: Any = "0"
        swept = 0
        try:
            while self._incarnation == server_id and not cancelling():
                scan = ("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
                [[cursor, keys]] = await self._scripts.commands([scan], server_id)
                stale = [k for k in keys if _left_by_another_server(k, server_id)]
                if stale:
                    await self._scripts.commands([("UNLINK", *stale)], server_id)
                    swept += len(stale)
                if cursor in (b"0", 0, "0"):
                    break
                await asyncio.sleep(0.005)  # a background chore: leave Redis to the graphs
        except (RedisError, OSError, TimeoutError) as exc:
            log.debug("sweeping entries of earlier Redis servers stopped: %s", describe_error(exc))
        if swept:
            log.info("deleted %d cache entries that earlier Redis servers left", swept)

    def _bumps(self, thread_ids: Sequence[str]) -> list[tuple[str, str]]:
        """Generation bumps: every cached entry of these threads becomes unreachable."""
        return [("INCR", self.gen_key(thread_id)) for thread_id in thread_ids]

    async def connect(self) -> None:
        """Connect and learn which server this is (raises when Redis is unreachable)."""
        self._adopt(await self._scripts.identify())

    async def run(self, compose: Callable[[], Sequence[ScriptCall]]) -> list[Any]:
        """Script calls composed for the server the runner is connected to (recomposed once
        when it turns out to be another one)."""
        try:
            return await self._scripts.run(compose(), self._incarnation)
        except ServerChanged as exc:
            self._adopt(exc.server_id)
        return await self._scripts.run(compose(), self._incarnation)

    async def commands(self, compose: Callable[[], Sequence[Sequence[Any]]]) -> list[Any]:
        try:
            return await self._scripts.commands(compose(), self._incarnation)
        except ServerChanged as exc:
            self._adopt(exc.server_id)
        return await self._scripts.commands(compose(), self._incarnation)

    @property
    def server(self) -> str | None:
        """The Redis server (its ``run_id``) the link's keys are composed for."""
        return self._incarnation

    async def script(self, name: str, compose: Callable[[], Sequence[ScriptCall]]) -> list[Any]:
        """Script calls in one round trip, under the breaker. ``compose`` builds them once the
        server is known: every key names the server it is meant for."""
        return await self.call(name, lambda: self.run(compose))

    async def invalidate(self, thread_ids: Sequence[str]) -> None:
        """Make every cached entry of these threads unreachable on every replica (a
        generation bump each); recorded as dirty when Redis is unavailable."""
        if not thread_ids:
            return
        bumps = functools.partial(self._bumps, thread_ids)
        try:
            await self.call("invalidate", lambda: self.commands(bumps))
        except RedisUnavailable:
            await self.mark_dirty(thread_ids)

    # ---------------------------------------------------------------- breaker

    async def call(self, name: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis round trip under the breaker (``op`` enforces its own time limit)."""
        if self.breaker.is_open:
            if not self.breaker.probe_due() or self._recovering.locked():
                raise RedisUnavailable("breaker open")
            await self._recover()
        try:
            with metrics.timed_op(name, "redis"):
                result = await op()
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            metrics.CHECKPOINT_REDIS_FAILURES.inc()
            if self.breaker.failure():
                metrics.CHECKPOINT_REDIS_AVAILABLE.set(0)
                why = describe_error(exc)
                log.warning("Redis tier unavailable, using the durable tier alone: %s", why)
            raise RedisUnavailable(describe_error(exc)) from exc
        self.breaker.success()
        return result

    async def _recover(self) -> None:
        """Half-open probe: repair dirty threads first; close the breaker only if that works."""
        async with self._recovering:
            if not self.breaker.is_open:
                return
            try:
                async with asyncio.timeout(self.settings.socket_timeout_s * 8):
                    await self._repair_dirty()
            except Exception as exc:
                self.breaker.failure()
                raise RedisUnavailable(f"recovery failed: {describe_error(exc)}") from exc
            self.breaker.success()
            metrics.CHECKPOINT_REDIS_AVAILABLE.set(1)
            log.warning("Redis tier is back; dirty threads repaired")

    async def _repair_dirty(self) -> int:
        """Bump the generation of every thread written while Redis was unreachable."""
        repaired = 0
        while True:
            dirty = await self.store.dirty_threads(500)
            if not dirty:
                return repaired
            await self.commands(functools.partial(self._bumps, [tid for tid, _ in dirty]))
            await self.store.clear_dirty(dirty)
            repaired += len(dirty)
            if len(dirty) < 500:
                return repaired

    async def mark_dirty(self, thread_ids: Sequence[str]) -> None:
        """Record threads written without Redis (their cached entries may be stale)."""
        metrics.CHECKPOINT_DIRTY_THREADS.inc(len(thread_ids))
        try:
            await self.store.mark_dirty(list(thread_ids))
        except Exception:
            log.exception("could not record dirty threads %s", list(thread_ids))

    def start(self) -> None:
        """Start the periodic repair (covers replicas that lost Redis while this one did not)."""
        self._repair_task = asyncio.get_running_loop().create_task(self._repair_loop())

    async def stop(self) -> None:
        """Stop the periodic repair (and a sweep in progress) and close the client; bounded in
        time whatever Redis does (a task that will not stop is logged and abandoned)."""
        tasks = [self._repair_task, self._sweep_task]
        self._repair_task = self._sweep_task = None
        try:
            await stop_tasks(tasks, what="closing the Redis link", log=log)
        finally:
            await self._scripts.close()
            try:
                async with asyncio.timeout(self.settings.connect_timeout_s * 2):
                    await self.client.aclose()
            except Exception:
                log.debug("closing the Redis client failed", exc_info=True)

    async def _repair_loop(self) -> None:
        while not cancelling():
            await asyncio.sleep(self.repair_interval_s)
            if self.breaker.is_open:
                continue
            try:
                async with asyncio.timeout(max(self.repair_interval_s, 1.0)):
                    await self._repair_dirty()
            except Exception:
                log.debug("periodic cache repair failed", exc_info=True)
