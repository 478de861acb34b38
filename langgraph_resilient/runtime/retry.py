"""``Retry``: backoff with jitter, a transient-only default, Retry-After hints, a deadline and a
token-bucket retry budget shared by every ``Retry`` with the same name.

The decision logic lives here once; the sync and async pipelines (``policy.py``) only differ
in how they wait.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

from langgraph_resilient.errors import ConfigurationError, ResilientError
from langgraph_resilient.runtime.clock import SYSTEM_CLOCK, Clock

__all__ = ["Jitter", "Retry", "is_transient", "retry_after_hint"]

Jitter = Literal["none", "full", "decorrelated"]

#: HTTP statuses worth retrying: timeouts, too-early, rate limits and server-side failures.
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529})

#: Exception class names (anywhere in the MRO) that SDKs use for transient failures: httpx,
#: requests, aiohttp, redis-py, the OpenAI and Anthropic SDKs, LangGraph's node timeout.
_TRANSIENT_NAMES = frozenset(
    {
        "APIConnectionError",
        "APITimeoutError",
        "ConnectError",
        "ConnectTimeout",
        "ConnectionError",
        "InternalServerError",
        "NodeTimeoutError",
        "OverloadedError",
        "PoolTimeout",
        "RateLimitError",
        "ReadError",
        "ReadTimeout",
        "RemoteProtocolError",
        "ServerDisconnectedError",
        "ServiceUnavailableError",
        "TimeoutError",
        "TimeoutException",
        "WriteTimeout",
    }
)


def _status_code(exc: BaseException) -> int | None:
    for holder in (exc, getattr(exc, "response", None)):
        if holder is None:
            continue
        for attr in ("status_code", "status"):
            value = getattr(holder, attr, None)
            if isinstance(value, int) and 100 <= value < 600:
                return value
    return None


def is_transient(exc: BaseException) -> bool:
    """The default ``retry_on``: True for errors that a later attempt may not hit.

    Retried: connection errors and timeouts (builtin ``ConnectionError``/``TimeoutError``,
    including ``NodeTimeoutError``), HTTP 408/425/429/5xx responses (from ``status_code`` on
    the error or its ``response``), and the transient error classes of common SDKs, matched by
    name (``RateLimitError``, ``APIConnectionError``, ``ReadTimeout``...). Not retried:
    everything else, notably programming errors (``ValueError``, ``KeyError``...), other 4xx
    responses, and this package's own rejections (``CircuitOpenError``, ``BulkheadFullError``,
    ``RetryBudgetExhaustedError``, ``FeatureDisabledError``, ``ConfigurationError``): retrying
    them would only add load.
    """
    if isinstance(exc, ResilientError):
        return isinstance(exc, (TimeoutError, ConnectionError))
    status = _status_code(exc)
    if status is not None:
        return status in _TRANSIENT_STATUS
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    return any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__)


def _headers(exc: BaseException) -> Mapping[str, Any] | None:
    for holder in (exc, getattr(exc, "response", None)):
        headers = getattr(holder, "headers", None)
        if headers is not None and hasattr(headers, "get"):
            return headers  # type: ignore[no-any-return]
    return None


def retry_after_hint(exc: BaseException) -> float | None:
    """Seconds the failing service asked us to wait, or None.

    Looks at, in order: a numeric ``retry_after_s`` or ``retry_after`` attribute on the error,
    then the ``retry-after-ms`` and ``retry-after`` headers of ``exc.headers`` or
    ``exc.response.headers`` (seconds or an HTTP date).
    """
    for attr in ("retry_after_s", "retry_after"):
        value = getattr(exc, attr, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return float(value)
    headers = _headers(exc)
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms") or headers.get("Retry-After-Ms")
    if raw_ms is not None:
        try:
            return max(float(raw_ms) / 1000.0, 0.0)
        except (TypeError, ValueError):
            pass
    raw = headers.get("retry-after") or headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(float(raw), 0.0)
    except (TypeError, ValueError):
        pass
    try:
        when = parsedate_to_datetime(str(raw))
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


class _TokenBucket:
    """The retry budget: each retry spends one token; tokens come back with time and calls."""

    __slots__ = ("_lock", "capacity", "clock", "name", "ratio", "refill_per_s", "tokens", "updated")

    def __init__(
        self, name: str, capacity: float, refill_per_s: float, ratio: float, clock: Clock
    ) -> None:
        self.name = name
        self.capacity = capacity
        self.refill_per_s = refill_per_s
        self.ratio = ratio
        self.clock = clock
        self.tokens = capacity
        self.updated = clock.monotonic()
        self._lock = threading.Lock()

    def params(self) -> tuple[float, float, float]:
        return (self.capacity, self.refill_per_s, self.ratio)

    def deposit(self) -> None:
        """Credit one call's share (``ratio``). Lock-free: a lost race only loses a deposit."""
        tokens = self.tokens + self.ratio
        self.tokens = tokens if tokens < self.capacity else self.capacity

    def try_withdraw(self) -> bool:
        with self._lock:
            now = self.clock.monotonic()
            elapsed = now - self.updated
            self.updated = now
            if elapsed > 0:
                self.tokens = min(self.capacity, self.tokens + elapsed * self.refill_per_s)
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True
            return False


_BUDGETS: dict[str, _TokenBucket] = {}
_BUDGETS_LOCK = threading.Lock()


def _budget(
    name: str, capacity: float, refill_per_s: float, ratio: float, clock: Clock
) -> _TokenBucket:
    with _BUDGETS_LOCK:
        bucket = _BUDGETS.get(name)
        if bucket is None:
            bucket = _BUDGETS[name] = _TokenBucket(name, capacity, refill_per_s, ratio, clock)
        elif bucket.params() != (capacity, refill_per_s, ratio):
            raise ConfigurationError(
                f"retry budget {name!r} already exists with capacity/refill/ratio "
                f"{bucket.params()}, not {(capacity, refill_per_s, ratio)}; give this Retry "
                "another name= or the same budget settings"
            )
        return bucket


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What to do after a failed attempt: wait ``delay_s`` and retry, or give up (``None``)."""

    delay_s: float | None
    reason: str


class Retry:
    """Retry a failed call with exponential backoff, jitter, a deadline and a retry budget.

    Args:
        max_attempts: total attempts including the first (1 disables retrying).
        initial_delay_s: the backoff before the second attempt (before jitter).
        max_delay_s: cap of any single backoff. A Retry-After hint longer than this stops
            retrying (the service asked for more patience than this policy has).
        multiplier: backoff growth per attempt: ``initial_delay_s * multiplier ** (n - 1)``.
        jitter: ``"full"`` (default; uniform in ``[0, backoff]``), ``"decorrelated"``
            (uniform in ``[initial_delay_s, 3 * previous delay]``, capped) or ``"none"``.
        retry_on: which errors to retry: a predicate ``(exc) -> bool`` or a tuple of exception
            types. Default :func:`is_transient` (timeouts, connection errors, 429/5xx...).
            ``GraphInterrupt``/``ParentCommand`` (any ``GraphBubbleUp``) and cancellation are
            never retried, whatever this says.
        respect_retry_after: wait at least the error's Retry-After hint (see
            :func:`retry_after_hint`).
        deadline_s: stop retrying when the next attempt would start later than this many
            seconds after the first one began.
        name: the retry budget's name. Every ``Retry`` with the same name in a process shares
            one budget, so retries across many nodes cannot multiply an outage.
        budget_capacity: tokens in the budget when full (each retry spends one); ``None``
            disables the budget.
        budget_refill_per_s: tokens regained per second.
        budget_ratio: tokens regained per call (0.1: at most ~10% extra load from retries
            once the burst capacity is spent).
        clock: time source (``ManualClock`` in tests).
        rng: random source for jitter (seed one for reproducible delays).

    When the budget is spent the call fails with ``RetryBudgetExhaustedError`` (the original
    error as ``__cause__``) instead of waiting.
    """

    __slots__ = (
        "budget",
        "clock",
        "deadline_s",
        "initial_delay_s",
        "jitter",
        "max_attempts",
        "max_delay_s",
        "multiplier",
        "name",
        "respect_retry_after",
        "retry_on",
        "rng",
    )

    def __init__(
        self,
        max_attempts: int = 3,
        *,
        initial_delay_s: float = 0.2,
        max_delay_s: float = 5.0,
        multiplier: float = 2.0,
        jitter: Jitter = "full",
        retry_on: Callable[[BaseException], bool]
        | tuple[type[BaseException], ...]
        | type[BaseException]
        | None = None,
        respect_retry_after: bool = True,
        deadline_s: float | None = None,
        name: str = "default",
        budget_capacity: float | None = 20.0,
        budget_refill_per_s: float = 1.0,
        budget_ratio: float = 0.1,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ConfigurationError("Retry(max_attempts=...) must be at least 1")
        if initial_delay_s < 0 or max_delay_s < 0 or multiplier < 1:
            raise ConfigurationError(
                "Retry delays must be >= 0 and multiplier >= 1; "
                f"got initial_delay_s={initial_delay_s}, max_delay_s={max_delay_s}, "
                f"multiplier={multiplier}"
            )
        if jitter not in ("none", "full", "decorrelated"):
            raise ConfigurationError(
                f"Retry(jitter={jitter!r}): use 'full', 'decorrelated' or 'none'"
            )
        if deadline_s is not None and deadline_s <= 0:
            raise ConfigurationError("Retry(deadline_s=...) must be positive or None")
        self.max_attempts = max_attempts
        self.initial_delay_s = initial_delay_s
        self.max_delay_s = max_delay_s
        self.multiplier = multiplier
        self.jitter: Jitter = jitter
        if retry_on is None:
            self.retry_on: Callable[[BaseException], bool] = is_transient
        elif isinstance(retry_on, (tuple, type)):
            types = retry_on

            def _matches(exc: BaseException) -> bool:
                return isinstance(exc, types)

            self.retry_on = _matches
        elif callable(retry_on):
            self.retry_on = retry_on
        else:
            raise ConfigurationError("Retry(retry_on=...) takes a predicate or exception types")
        self.respect_retry_after = respect_retry_after
        self.deadline_s = deadline_s
        self.name = name
        self.clock = clock or SYSTEM_CLOCK
        self.rng = rng or random.Random()
        if budget_capacity is None:
            self.budget: _TokenBucket | None = None
        else:
            if budget_capacity < 1 or budget_refill_per_s < 0 or budget_ratio < 0:
                raise ConfigurationError(
                    "Retry budget needs budget_capacity >= 1 and non-negative refill and ratio"
                )
            self.budget = _budget(
                name, budget_capacity, budget_refill_per_s, budget_ratio, self.clock
            )

    def __repr__(self) -> str:
        return (
            f"Retry(max_attempts={self.max_attempts}, initial_delay_s={self.initial_delay_s}, "
            f"max_delay_s={self.max_delay_s}, jitter={self.jitter!r}, name={self.name!r})"
        )

    def backoff(self, attempt: int, previous_delay_s: float) -> float:
        """The jittered delay after failed attempt number ``attempt`` (1-based)."""
        if self.jitter == "decorrelated":
            low = self.initial_delay_s
            high = max(low, previous_delay_s * 3.0)
            return min(self.max_delay_s, self.rng.uniform(low, high))
        base = min(self.max_delay_s, self.initial_delay_s * self.multiplier ** (attempt - 1))
        if self.jitter == "full":
            return self.rng.uniform(0.0, base)
        return base

    def decide(
        self, exc: BaseException, attempt: int, started_at: float, previous_delay_s: float
    ) -> RetryDecision:
        """Whether (and after how long) to retry after attempt ``attempt`` failed with ``exc``.

        Spends a budget token when it says yes; ``reason == "budget"`` means the budget said no.
        """
        if attempt >= self.max_attempts:
            return RetryDecision(None, "max_attempts")
        if not self.retry_on(exc):
            return RetryDecision(None, "not_retryable")
        delay = self.backoff(attempt, previous_delay_s or self.initial_delay_s)
        if self.respect_retry_after:
            hint = retry_after_hint(exc)
            if hint is not None:
                if hint > self.max_delay_s:
                    return RetryDecision(None, "hint_too_long")
                delay = max(delay, hint)
        if (
            self.deadline_s is not None
            and self.clock.monotonic() + delay - started_at > self.deadline_s
        ):
            return RetryDecision(None, "deadline")
        if self.budget is not None and not self.budget.try_withdraw():
            return RetryDecision(None, "budget")
        return RetryDecision(delay, "retry")
