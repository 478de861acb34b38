"""``Retrying``: every call the saver makes to its durable store, with a bounded retry.

Connection failures (a restart, a failover, a dropped connection) are retried a bounded number
of times (``write_attempts`` calls within ``write_retry_deadline_s``: reads too, despite the
name); every store method is one transaction and safe to repeat. Whatever the store raises then
reaches the caller as one of the saver's typed errors: its own (a stale lease, a forked history)
as they are, anything else as :class:`DurableWriteError` (a write: nothing was stored, the
statement rolled back) or :class:`TierUnavailableError` (a read), with the driver's error as
the cause.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from langgraph_resilient.checkpoint.durable.store import DurableStore
from langgraph_resilient.checkpoint.settings import SaverSettings
from langgraph_resilient.errors import (
    DurableWriteError,
    ResilientError,
    TierUnavailableError,
    describe_error,
)
from langgraph_resilient.observability import metrics

T = TypeVar("T")


class Retrying:
    """Calls to ``store`` under the saver's retry settings, timed per operation."""

    def __init__(self, store: DurableStore, settings: SaverSettings) -> None:
        self.store = store
        self.attempts = settings.write_attempts
        self.deadline_s = settings.write_retry_deadline_s

    async def __call__(self, op: str, call: Callable[[], Awaitable[T]], *, write: bool) -> T:
        """``await call()``, named ``op`` in metrics and errors; ``write`` picks the error."""
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                with metrics.timed_op(op, self.store.tier_name):
                    return await call()
            except ResilientError:
                raise
            except Exception as exc:
                transient = self.store.is_transient(exc)
                elapsed = time.monotonic() - started
                if not transient or attempt >= self.attempts or elapsed >= self.deadline_s:
                    raise _typed(
                        self.store.tier_name, op, exc, write, attempt, elapsed, transient
                    ) from exc
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0) * (0.5 + random.random()))


def _typed(
    tier_name: str,
    op: str,
    exc: Exception,
    write: bool,
    attempt: int,
    elapsed: float,
    transient: bool,
) -> TierUnavailableError:
    tried = f" after {attempt} attempt(s) in {elapsed:.1f}s" if transient else ""
    advice = (
        "Nothing was stored; the step can be resumed once the database is back."
        if write
        else "Check that the database is reachable."
    )
    error = DurableWriteError if write else TierUnavailableError
    return error(tier_name, f"{op} failed{tried}: {describe_error(exc)}. {advice}")
