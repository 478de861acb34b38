"""``HealthChecker``: periodic checks (Redis, Postgres, breakers, your callables) that set the
``DegradationManager``'s service level, with hysteresis so that it does not flap."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from langgraph_resilient._aio import stop_tasks
from langgraph_resilient.errors import ConfigurationError
from langgraph_resilient.observability.events import EventBus, EventKind
from langgraph_resilient.runtime.breaker import CircuitBreaker, CircuitState
from langgraph_resilient.runtime.clock import SYSTEM_CLOCK, Clock
from langgraph_resilient.runtime.degradation import DegradationManager, ServiceLevel

__all__ = ["HealthChecker"]

logger = logging.getLogger(__name__)

CheckFn = Callable[[], "bool | Awaitable[bool | None] | None"]


@dataclass
class _Check:
    name: str
    fn: CheckFn
    degrades_to: ServiceLevel
    healthy: bool = True
    streak: int = 0  # consecutive results contradicting ``healthy``
    last_error: str | None = field(default=None)


class HealthChecker:
    """Run health checks every ``interval_s`` and drive a ``DegradationManager`` from them.

    Each check has a level it ``degrades_to`` while unhealthy; the service level is the lowest
    such level among unhealthy checks (``FULL`` when all are healthy). Hysteresis: a check
    turns unhealthy after ``failures_to_degrade`` failed runs in a row and healthy again after
    ``successes_to_recover`` good runs in a row. A check fails when it returns ``False``,
    raises, or takes longer than ``timeout_s``; ``True``/``None`` is healthy.

    Args:
        manager: the ``DegradationManager`` whose level this sets (only when it changes; a
            manual ``set_level`` in between stays until the checks' verdict changes).
        interval_s: time between rounds of checks.
        timeout_s: time limit of one check.
        failures_to_degrade: consecutive failures before a check counts as unhealthy.
        successes_to_recover: consecutive successes before it counts as healthy again.
        clock: time source for the background loop (``ManualClock`` in tests).
        events: event bus for ``HEALTH_CHECK`` events (default: the manager's).

    Run it with ``async with checker:`` in async programs, ``with checker:`` in sync ones (a
    background thread with its own event loop), or call ``await checker.check_once()``.
    """

    def __init__(
        self,
        manager: DegradationManager,
        *,
        interval_s: float = 5.0,
        timeout_s: float = 2.0,
        failures_to_degrade: int = 2,
        successes_to_recover: int = 3,
        clock: Clock | None = None,
        events: EventBus | None = None,
    ) -> None:
        if interval_s <= 0 or timeout_s <= 0:
            raise ConfigurationError("HealthChecker needs interval_s > 0 and timeout_s > 0")
        if failures_to_degrade < 1 or successes_to_recover < 1:
            raise ConfigurationError(
                "failures_to_degrade and successes_to_recover must be at least 1"
            )
        self.manager = manager
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.failures_to_degrade = failures_to_degrade
        self.successes_to_recover = successes_to_recover
        self.clock = clock or SYSTEM_CLOCK
        self.events = events or manager.events
        self._checks: dict[str, _Check] = {}
        self._verdict: ServiceLevel | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._cleanups: list[Callable[[], Awaitable[None]]] = []

    # ------------------------------------------------------------------ registering checks

    def add_check(
        self, name: str, check: CheckFn, *, degrades_to: ServiceLevel = ServiceLevel.DEGRADED
    ) -> None:
        """Add a check: a sync or async callable returning True/None (healthy) or False."""
        if name in self._checks:
            raise ConfigurationError(f"health check {name!r} already exists")
        self._checks[name] = _Check(name, check, ServiceLevel(degrades_to))

    def add_redis(
        self,
        url: str,
        *,
        name: str = "redis",
        degrades_to: ServiceLevel = ServiceLevel.DEGRADED,
    ) -> None:
        """Check Redis with ``PING`` (a fresh connection per round). ``url`` takes every form
        the saver's ``redis_url`` takes: ``redis://``, ``rediss://``, ``redis+sentinel://``
        (the current master) and ``redis+cluster://``."""
        from langgraph_resilient._redis.client import RedisSettings, connect

        settings = RedisSettings(
            url=url, socket_timeout_s=self.timeout_s, connect_timeout_s=self.timeout_s
        )

        async def ping_redis() -> bool:
            client = connect(settings)
            try:
                return bool(await client.ping())
            finally:
                await client.aclose()

        self.add_check(name, ping_redis, degrades_to=degrades_to)

    def add_postgres(
        self,
        dsn: str,
        *,
        name: str = "postgres",
        degrades_to: ServiceLevel = ServiceLevel.MINIMAL,
    ) -> None:
        """Check a Postgres server with ``SELECT 1`` over asyncpg (a fresh connection)."""
        import asyncpg

        async def ping_postgres() -> bool:
            conn = await asyncpg.connect(dsn, timeout=self.timeout_s)
            try:
                return bool(await conn.fetchval("SELECT 1") == 1)
            finally:
                await conn.close()

        self.add_check(name, ping_postgres, degrades_to=degrades_to)

    def add_breaker(
        self,
        breaker: CircuitBreaker,
        *,
        name: str | None = None,
        degrades_to: ServiceLevel = ServiceLevel.DEGRADED,
    ) -> None:
        """Count ``breaker`` as unhealthy while it is open (forced or tripped)."""

        def breaker_closed() -> bool:
            return breaker.state not in (CircuitState.OPEN, CircuitState.FORCED_OPEN)

        self.add_check(name or f"breaker:{breaker.name}", breaker_closed, degrades_to=degrades_to)

    # ------------------------------------------------------------------ running

    def status(self) -> dict[str, bool]:
        """Check name -> healthy (after hysteresis)."""
        return {name: check.healthy for name, check in self._checks.items()}

    async def _run_one(self, check: _Check) -> tuple[bool, str | None]:
        try:
            async with asyncio.timeout(self.timeout_s):
                if inspect.iscoroutinefunction(check.fn):
                    result: Any = await check.fn()
                else:
                    # sync checks may block (a breaker's shared state, a socket): use a thread
                    result = await asyncio.to_thread(check.fn)
                    if inspect.isawaitable(result):
                        result = await result
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return result is None or bool(result), None

    async def check_once(self) -> ServiceLevel:
        """Run every check once (concurrently), update the level; returns the verdict."""
        checks = list(self._checks.values())
        results = await asyncio.gather(*(self._run_one(c) for c in checks))
        for check, (ok, error) in zip(checks, results, strict=True):
            if ok == check.healthy:
                check.streak = 0
                continue
            check.streak += 1
            check.last_error = error
            needed = self.successes_to_recover if ok else self.failures_to_degrade
            if check.streak >= needed:
                check.healthy = ok
                check.streak = 0
                self.events.publish(EventKind.HEALTH_CHECK, check.name, healthy=ok, error=error)
                logger.log(
                    logging.INFO if ok else logging.WARNING,
                    "health check %r is now %s%s",
                    check.name,
                    "healthy" if ok else "unhealthy",
                    f" ({error})" if error else "",
                )
        verdict = min((c.degrades_to for c in checks if not c.healthy), default=ServiceLevel.FULL)
        if verdict != self._verdict:
            self._verdict = verdict
            unhealthy = sorted(c.name for c in checks if not c.healthy)
            reason = "health: " + (
                ", ".join(unhealthy) + " unhealthy" if unhealthy else "all healthy"
            )
            self.manager.set_level(verdict, reason=reason)
        return verdict

    async def run(self) -> None:
        """Check forever, every ``interval_s`` (until cancelled or :meth:`stop`)."""
        while not self._stop.is_set():
            try:
                await self.check_once()
            except Exception:
                logger.exception("health check round failed")
            await self.clock.asleep(self.interval_s)

    def stop(self) -> None:
        """Ask the background loop (task or thread) to finish after its current round."""
        self._stop.set()

    async def __aenter__(self) -> HealthChecker:
        self._stop.clear()
        self._task = asyncio.get_running_loop().create_task(self.run())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        task, self._task = self._task, None
        await stop_tasks([task], what="stopping the health checker", log=logger)

    def __enter__(self) -> HealthChecker:
        self._stop.clear()

        def loop_in_thread() -> None:
            async def main() -> None:
                while not self._stop.is_set():
                    try:
                        await self.check_once()
                    except Exception:
                        logger.exception("health check round failed")
                    await asyncio.get_running_loop().run_in_executor(
                        None, self._stop.wait, self.interval_s
                    )

            asyncio.run(main())

        self._thread = threading.Thread(
            target=loop_in_thread, name="langgraph-resilient-health", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s * 2 + 1)
            self._thread = None
