"""``TierBreaker``: when to stop calling Redis, and when to try it again.

A cache tier must never make a graph step fail or wait: a few consecutive failures (timeouts
included) open the breaker, and while it is open every caller skips Redis at once; after
``open_for_s`` one caller probes. Used by the saver's Redis tier and by ``TieredCache``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class TierBreaker:
    """Consecutive-failure breaker of a Redis tier.

    ``failure_threshold`` failures in a row open it for ``open_for_s``; then one caller probes
    (running the repair first) and closes it or opens it again.
    """

    failure_threshold: int = 2
    open_for_s: float = 2.0
    failures: int = 0
    opened_at: float | None = None
    clock: Callable[[], float] = time.monotonic

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def probe_due(self) -> bool:
        return self.opened_at is not None and self.clock() - self.opened_at >= self.open_for_s

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def trip(self) -> None:
        """Open now (Redis was unreachable when the saver started)."""
        self.failures = self.failure_threshold
        self.opened_at = self.clock()

    def failure(self) -> bool:
        """Count a failure; True when this one opened the breaker."""
        self.failures += 1
        if self.failures >= self.failure_threshold:
            was_open = self.opened_at is not None
            self.opened_at = self.clock()
            return not was_open
        return False
