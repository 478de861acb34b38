"""``ResiliencePolicy`` and the pipeline it builds around a node or a function.

Order, outermost first::

    degradation gate -> fallback -> bulkhead -> retry (+ budget) -> circuit breaker
        -> per-attempt timeout -> the call

Each strategy is a layer built once (at ``with_resilience``/``guard`` time) as a closure around
the next; a strategy that is not configured adds no layer and costs nothing. Sync and async
pipelines differ only in how they wait; every decision (retry delays, breaker transitions,
which errors count) is made by the same strategy objects.

The layers call ``next(a, b)``: for a graph node ``(input, config)``, for a guarded function
``(args, kwargs)``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar, cast, overload

from langchain_core.runnables.config import set_config_context

from langgraph_resilient.errors import (
    BulkheadFullError,
    CircuitOpenError,
    ConfigurationError,
    FeatureDisabledError,
    NodeTimeoutError,
    RetryBudgetExhaustedError,
)
from langgraph_resilient.observability.events import EventBus, EventKind
from langgraph_resilient.runtime._compat import (
    GraphBubbleUp,
    RetryPolicy,
    guard_late_writes,
    native_will_retry,
    retry_config,
)
from langgraph_resilient.runtime.breaker import CircuitBreaker
from langgraph_resilient.runtime.bulkhead import Bulkhead
from langgraph_resilient.runtime.degradation import DegradationManager
from langgraph_resilient.runtime.fallback import Fallback
from langgraph_resilient.runtime.retry import Retry
from langgraph_resilient.runtime.timeout import THREADS, AttemptExpired, DeadlineQueues, Timeout

__all__ = ["ResiliencePolicy"]

F = TypeVar("F", bound=Callable[..., Any])
SyncCall = Callable[[Any, Any], Any]
AsyncCall = Callable[[Any, Any], Coroutine[Any, Any, Any]]

_REJECTIONS = (CircuitOpenError, BulkheadFullError, FeatureDisabledError)


class ResiliencePolicy:
    """The set of strategies guarding one node (or function): all optional, composable.

    Args:
        retry: a :class:`Retry` (per-call retries with backoff and a retry budget).
        breaker: a :class:`CircuitBreaker`; share one object among the nodes that call the
            same dependency.
        timeout: a :class:`Timeout` or a number of seconds, per attempt.
        bulkhead: a :class:`Bulkhead` limiting concurrent calls.
        fallback: a :class:`Fallback` (or a plain ``(state, error) -> result`` callable) used
            when the call fails or its feature is off.
        feature: a feature name; while the ``DegradationManager`` has it switched off the call
            is skipped (fallback or ``FeatureDisabledError``).
        degradation: the ``DegradationManager`` deciding ``feature``; ``with_resilience``'s
            ``degradation=`` is used when this is None.
        events: event bus (default ``EventBus.default()``).

    Apply it to a graph with ``with_resilience(graph, policy)`` or to any function or coroutine
    function with ``policy.guard(fn)`` / ``@policy.guard``.
    """

    __slots__ = (
        "breaker",
        "bulkhead",
        "degradation",
        "events",
        "fallback",
        "feature",
        "retry",
        "timeout",
    )

    def __init__(
        self,
        *,
        retry: Retry | None = None,
        breaker: CircuitBreaker | None = None,
        timeout: Timeout | float | None = None,
        bulkhead: Bulkhead | None = None,
        fallback: Fallback | Callable[[Any, BaseException], Any] | None = None,
        feature: str | None = None,
        degradation: DegradationManager | None = None,
        events: EventBus | None = None,
    ) -> None:
        if retry is not None and not isinstance(retry, Retry):
            raise ConfigurationError("ResiliencePolicy(retry=...) takes a Retry")
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise ConfigurationError("ResiliencePolicy(breaker=...) takes a CircuitBreaker")
        if bulkhead is not None and not isinstance(bulkhead, Bulkhead):
            raise ConfigurationError("ResiliencePolicy(bulkhead=...) takes a Bulkhead")
        if feature is not None and (not isinstance(feature, str) or not feature):
            raise ConfigurationError("ResiliencePolicy(feature=...) must be a non-empty string")
        self.retry = retry
        self.breaker = breaker
        self.timeout = (
            timeout if timeout is None or isinstance(timeout, Timeout) else Timeout(timeout)
        )
        self.bulkhead = bulkhead
        self.fallback = (
            fallback if fallback is None or isinstance(fallback, Fallback) else Fallback(fallback)
        )
        self.feature = feature
        self.degradation = degradation
        self.events = events or EventBus.default()

    def __repr__(self) -> str:
        parts = [
            f"{name}={getattr(self, name)!r}"
            for name in ("retry", "breaker", "timeout", "bulkhead", "fallback", "feature")
            if getattr(self, name) is not None
        ]
        return f"ResiliencePolicy({', '.join(parts)})"

    def replace(self, **changes: Any) -> ResiliencePolicy:
        """A copy with some strategies changed, e.g. ``policy.replace(retry=None)``."""
        kwargs: dict[str, Any] = {
            name: getattr(self, name)
            for name in (
                "retry",
                "breaker",
                "timeout",
                "bulkhead",
                "fallback",
                "feature",
                "degradation",
                "events",
            )
        }
        unknown = set(changes) - set(kwargs)
        if unknown:
            raise ConfigurationError(f"ResiliencePolicy has no {sorted(unknown)}")
        kwargs.update(changes)
        return ResiliencePolicy(**kwargs)

    @overload
    def guard(self, fn: F, *, name: str | None = None) -> F: ...

    @overload
    def guard(self, fn: None = None, *, name: str | None = None) -> Callable[[F], F]: ...

    def guard(self, fn: F | None = None, *, name: str | None = None) -> F | Callable[[F], F]:
        """Wrap a function or coroutine function (an LLM or tool call) with this policy.

        Usable as ``policy.guard(call_llm)`` or as a decorator (``@policy.guard`` or
        ``@policy.guard(name="llm")``). The wrapper has the same signature and is async if
        ``fn`` is. ``name`` labels events (default: the function's qualified name). A
        ``Fallback`` receives the first positional argument as ``state``.
        """
        if fn is None:
            return lambda f: self.guard(f, name=name)
        site = _Site(name or str(getattr(fn, "__qualname__", repr(fn))), node=False)
        if _is_async(fn):
            afn = fn

            async def call_async(args: Any, kwargs: Any) -> Any:
                return await afn(*args, **kwargs)

            pipeline = build_async(self, site, call_async, thread_backed=False)

            @functools.wraps(fn)
            async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                return await pipeline(args, kwargs)

            return cast(F, guarded_async)

        sfn = fn

        def call_sync(args: Any, kwargs: Any) -> Any:
            return sfn(*args, **kwargs)

        sync_pipeline = build_sync(self, site, call_sync)

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            return sync_pipeline(args, kwargs)

        return cast(F, guarded)


def _is_async(fn: Callable[..., Any]) -> bool:
    """A coroutine function, or an object whose ``__call__`` is one."""
    call = type(fn).__call__ if not inspect.isfunction(fn) else None
    return inspect.iscoroutinefunction(fn) or (
        call is not None and inspect.iscoroutinefunction(call)
    )


@dataclass(frozen=True, slots=True)
class _Site:
    """What a pipeline guards."""

    name: str
    node: bool
    #: LangGraph retry policies that still apply to this node (our fallback waits for them).
    native_retry: tuple[RetryPolicy, ...] = ()


class _CallStats:
    """Per-call facts for the ``CALL`` event (only built while someone listens)."""

    __slots__ = ("attempts", "fallback")

    def __init__(self) -> None:
        self.attempts = 1
        self.fallback = False


_STATS: contextvars.ContextVar[_CallStats | None] = contextvars.ContextVar(
    "langgraph_resilient_call_stats", default=None
)


def _state_of(site: _Site, a: Any) -> Any:
    if site.node:
        return a
    return a[0] if a else None


def _error_name(exc: BaseException | None) -> str | None:
    return None if exc is None else type(exc).__name__


def _disabled_error(feature: str, manager: DegradationManager) -> FeatureDisabledError:
    return FeatureDisabledError(
        f"feature {feature!r} is switched off (service level {manager.level.name}); "
        "give the node's policy a Fallback or raise the service level"
    )


def _resolve_manager(policy: ResiliencePolicy, site: _Site) -> DegradationManager | None:
    if policy.feature is None:
        return None
    if policy.degradation is None:
        raise ConfigurationError(
            f"{site.name!r}: the policy has feature={policy.feature!r} but no "
            "DegradationManager; pass degradation= to with_resilience or ResiliencePolicy"
        )
    return policy.degradation


# ====================================================================== the pipeline


class _Layers(NamedTuple):
    """How one flavour (sync or async) wraps a call in each layer."""

    timeout: Callable[[Any, Timeout], Any]
    breaker: Callable[[Any, CircuitBreaker], Any]
    retry: Callable[[Any, Retry], Any]
    bulkhead: Callable[[Any, Bulkhead], Any]
    fallback: Callable[[Any, Fallback], Any]
    gate: Callable[[Any, str, DegradationManager], Any]
    observe: Callable[[Any], Any]


def _assemble(
    policy: ResiliencePolicy, site: _Site, call: Any, layers: _Layers, *, retry: bool
) -> Any:
    """Wrap ``call`` in the configured layers, innermost first. Outermost first, the order
    is: degradation gate, fallback, bulkhead, retry, breaker, per-attempt timeout, the call.
    A layer that is not configured adds nothing."""
    fn = call
    if policy.timeout is not None:
        fn = layers.timeout(fn, policy.timeout)
    if policy.breaker is not None:
        fn = layers.breaker(fn, policy.breaker)
    if policy.retry is not None and retry and policy.retry.max_attempts > 1:
        fn = layers.retry(fn, policy.retry)
    if policy.bulkhead is not None:
        fn = layers.bulkhead(fn, policy.bulkhead)
    if policy.fallback is not None:
        fn = layers.fallback(fn, policy.fallback)
    manager = _resolve_manager(policy, site)
    if manager is not None and policy.feature is not None:
        fn = layers.gate(fn, policy.feature, manager)
    return call if fn is call else layers.observe(fn)


# ====================================================================== sync pipeline


def build_sync(
    policy: ResiliencePolicy, site: _Site, call: SyncCall, *, retry: bool = True
) -> SyncCall:
    """The sync pipeline around ``call``; ``retry=False`` leaves the Retry layer out."""
    bus = policy.events
    layers = _Layers(
        timeout=lambda fn, t: _sync_timeout(fn, t, site, bus),
        breaker=lambda fn, b: _sync_breaker(fn, b, site),
        retry=lambda fn, r: _sync_retry(fn, r, site, bus),
        bulkhead=lambda fn, b: _sync_bulkhead(fn, b, site, bus),
        fallback=lambda fn, f: _sync_fallback(fn, f, site, bus),
        gate=lambda fn, feature, m: _sync_gate(fn, feature, m, policy.fallback, site, bus),
        observe=lambda fn: _sync_observe(fn, site, bus),
    )
    pipeline: SyncCall = _assemble(policy, site, call, layers, retry=retry)
    return pipeline


def _sync_observe(next_: SyncCall, site: _Site, bus: EventBus) -> SyncCall:
    name = site.name

    def observe(a: Any, b: Any) -> Any:
        if not bus.active:
            return next_(a, b)
        stats = _CallStats()
        token = _STATS.set(stats)
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            return next_(a, b)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _STATS.reset(token)
            _publish_call(bus, name, stats, error, time.perf_counter() - started)

    return observe


def _publish_call(
    bus: EventBus, name: str, stats: _CallStats, error: BaseException | None, duration: float
) -> None:
    if isinstance(error, (GraphBubbleUp, asyncio.CancelledError)):
        outcome = "interrupted"
    elif error is not None:
        outcome = "rejected" if isinstance(error, _REJECTIONS) else "error"
    else:
        outcome = "fallback" if stats.fallback else "success"
    bus.publish(
        EventKind.CALL,
        name,
        outcome=outcome,
        duration_s=duration,
        attempts=stats.attempts,
        error=_error_name(error),
    )


def _sync_gate(
    next_: SyncCall,
    feature: str,
    manager: DegradationManager,
    fallback: Fallback | None,
    site: _Site,
    bus: EventBus,
) -> SyncCall:
    def gate(a: Any, b: Any) -> Any:
        if manager.is_enabled(feature):
            return next_(a, b)
        bus.publish(
            EventKind.FEATURE_DISABLED, site.name, feature=feature, fallback=fallback is not None
        )
        error = _disabled_error(feature, manager)
        if fallback is None:
            raise error
        return _run_fallback_sync(fallback, site, a, error)

    return gate


def _run_fallback_sync(fallback: Fallback, site: _Site, a: Any, error: BaseException) -> Any:
    stats = _STATS.get()
    if stats is not None:
        stats.fallback = True
    result = fallback.fn(_state_of(site, a), error)
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()
        raise ConfigurationError(
            f"{site.name!r}: the Fallback is async but the call is sync; use ainvoke/astream "
            "(or an async guarded function), or give a sync fallback"
        ) from error
    return result


def _sync_fallback(next_: SyncCall, fallback: Fallback, site: _Site, bus: EventBus) -> SyncCall:
    handles = fallback.handles
    native = site.native_retry

    def with_fallback(a: Any, b: Any) -> Any:
        try:
            return next_(a, b)
        except GraphBubbleUp:
            raise
        except Exception as exc:
            if not handles(exc) or (native and native_will_retry(native, exc, b)):
                raise
            bus.publish(EventKind.FALLBACK, site.name, error=_error_name(exc))
            return _run_fallback_sync(fallback, site, a, exc)

    return with_fallback


def _sync_bulkhead(next_: SyncCall, bulkhead: Bulkhead, site: _Site, bus: EventBus) -> SyncCall:
    acquire = bulkhead.acquire if bulkhead.max_queued else bulkhead.try_acquire
    release = bulkhead.release

    def with_bulkhead(a: Any, b: Any) -> Any:
        try:
            acquire()
        except BulkheadFullError as exc:
            _publish_bulkhead(bus, site, bulkhead, exc)
            raise
        try:
            return next_(a, b)
        finally:
            release()

    return with_bulkhead


def _publish_bulkhead(bus: EventBus, site: _Site, bulkhead: Bulkhead, exc: BaseException) -> None:
    bus.publish(
        EventKind.BULKHEAD_REJECTED,
        site.name,
        max_concurrent=bulkhead.max_concurrent,
        max_queued=bulkhead.max_queued,
        reason=getattr(exc, "reason", "queue_full"),
    )


def _give_up(
    retry: Retry, site: _Site, bus: EventBus, exc: Exception, attempt: int, reason: str
) -> None:
    """Publish why we stop; raise the budget error if that is the reason."""
    bus.publish(
        EventKind.RETRY_GIVE_UP, site.name, attempt=attempt, reason=reason, error=_error_name(exc)
    )
    if reason == "budget":
        bus.publish(
            EventKind.RETRY_BUDGET_EXHAUSTED, retry.name, node=site.name, error=_error_name(exc)
        )
        raise RetryBudgetExhaustedError(
            f"{site.name!r} failed ({type(exc).__name__}: {exc}) and the retry budget "
            f"{retry.name!r} is spent; the dependency is failing broadly, so no retry was made"
        ) from exc


def _retry_delay(
    retry: Retry,
    site: _Site,
    bus: EventBus,
    exc: Exception,
    attempt: int,
    started: float,
    delay: float,
) -> float | None:
    """After a failed attempt: the delay before the next one (published as a retry), or
    ``None`` to give up (published; raises instead when the retry budget is spent)."""
    decision = retry.decide(exc, attempt, started, delay)
    if decision.delay_s is None:
        _give_up(retry, site, bus, exc, attempt, decision.reason)
        return None
    bus.publish(
        EventKind.RETRY,
        site.name,
        attempt=attempt,
        delay_s=decision.delay_s,
        error=_error_name(exc),
    )
    return decision.delay_s


def _sync_retry(next_: SyncCall, retry: Retry, site: _Site, bus: EventBus) -> SyncCall:
    clock = retry.clock
    budget = retry.budget
    is_node = site.node

    def with_retry(a: Any, b: Any) -> Any:
        if budget is not None:
            budget.deposit()
        started = clock.monotonic()
        attempt = 1
        delay = 0.0
        while True:
            try:
                if attempt == 1 or not is_node:
                    return next_(a, b)
                with set_config_context(b) as context:
                    return context.run(next_, a, b)
            except GraphBubbleUp:
                raise
            except Exception as exc:
                next_delay = _retry_delay(retry, site, bus, exc, attempt, started, delay)
                if next_delay is None:
                    raise
                delay = next_delay
            clock.sleep(delay)
            attempt += 1
            stats = _STATS.get()
            if stats is not None:
                stats.attempts = attempt
            if is_node:
                b = retry_config(b)

    return with_retry


def _sync_breaker(next_: SyncCall, breaker: CircuitBreaker, site: _Site) -> SyncCall:
    name = site.name
    acquire = breaker.acquire
    on_success = breaker.on_success
    on_failure = breaker.on_failure
    release = breaker.release
    if not breaker.timed:

        def with_breaker(a: Any, b: Any) -> Any:
            permit = acquire(name)
            try:
                result = next_(a, b)
            except GraphBubbleUp:
                release(permit)
                raise
            except Exception as exc:
                on_failure(permit, exc, 0.0)
                raise
            except BaseException:
                release(permit)
                raise
            on_success(permit, 0.0)
            return result

        return with_breaker

    monotonic = breaker.clock.monotonic

    def with_timed_breaker(a: Any, b: Any) -> Any:
        permit = acquire(name)
        started = monotonic()
        try:
            result = next_(a, b)
        except GraphBubbleUp:
            release(permit)
            raise
        except Exception as exc:
            on_failure(permit, exc, monotonic() - started)
            raise
        except BaseException:
            release(permit)
            raise
        on_success(permit, monotonic() - started)
        return result

    return with_timed_breaker


def _timeout_error(site: _Site, seconds: float) -> NodeTimeoutError:
    return NodeTimeoutError(
        f"{site.name!r} did not finish within its {seconds:g}s Timeout; the attempt was "
        "abandoned (retry, fallback or breaker policies decide what happens next)"
    )


def _sync_timeout(next_: SyncCall, timeout: Timeout, site: _Site, bus: EventBus) -> SyncCall:
    seconds = timeout.seconds
    run = THREADS.run

    def with_timeout(a: Any, b: Any) -> Any:
        close = None
        if site.node:
            b, close = guard_late_writes(b)
        try:
            return run(next_, (a, b), seconds)
        except AttemptExpired:
            if close is not None:
                close()
            bus.publish(EventKind.TIMEOUT, site.name, timeout_s=seconds, thread_abandoned=True)
            raise _timeout_error(site, seconds) from None

    return with_timeout


# ====================================================================== async pipeline


def build_async(
    policy: ResiliencePolicy,
    site: _Site,
    call: AsyncCall,
    *,
    thread_backed: bool,
    retry: bool = True,
) -> AsyncCall:
    """The async pipeline around ``call``. ``thread_backed``: the call runs sync code in a
    thread (a sync node under ``ainvoke``), so a timeout abandons that thread."""
    bus = policy.events
    layers = _Layers(
        timeout=lambda fn, t: _async_timeout(fn, t, site, bus, thread_backed),
        breaker=lambda fn, b: _async_breaker(fn, b, site),
        retry=lambda fn, r: _async_retry(fn, r, site, bus),
        bulkhead=lambda fn, b: _async_bulkhead(fn, b, site, bus),
        fallback=lambda fn, f: _async_fallback(fn, f, site, bus),
        gate=lambda fn, feature, m: _async_gate(fn, feature, m, policy.fallback, site, bus),
        observe=lambda fn: _async_observe(fn, site, bus),
    )
    pipeline: AsyncCall = _assemble(policy, site, call, layers, retry=retry)
    return pipeline


def _async_observe(next_: AsyncCall, site: _Site, bus: EventBus) -> AsyncCall:
    name = site.name

    async def observe(a: Any, b: Any) -> Any:
        if not bus.active:
            return await next_(a, b)
        stats = _CallStats()
        token = _STATS.set(stats)
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            return await next_(a, b)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _STATS.reset(token)
            _publish_call(bus, name, stats, error, time.perf_counter() - started)

    return observe


async def _run_fallback_async(fallback: Fallback, site: _Site, a: Any, error: BaseException) -> Any:
    stats = _STATS.get()
    if stats is not None:
        stats.fallback = True
    result = fallback.fn(_state_of(site, a), error)
    if inspect.isawaitable(result):
        result = await result
    return result


def _async_gate(
    next_: AsyncCall,
    feature: str,
    manager: DegradationManager,
    fallback: Fallback | None,
    site: _Site,
    bus: EventBus,
) -> AsyncCall:
    async def gate(a: Any, b: Any) -> Any:
        if manager.is_enabled(feature):
            return await next_(a, b)
        bus.publish(
            EventKind.FEATURE_DISABLED, site.name, feature=feature, fallback=fallback is not None
        )
        error = _disabled_error(feature, manager)
        if fallback is None:
            raise error
        return await _run_fallback_async(fallback, site, a, error)

    return gate


def _async_fallback(next_: AsyncCall, fallback: Fallback, site: _Site, bus: EventBus) -> AsyncCall:
    handles = fallback.handles
    native = site.native_retry

    async def with_fallback(a: Any, b: Any) -> Any:
        try:
            return await next_(a, b)
        except GraphBubbleUp:
            raise
        except Exception as exc:
            if not handles(exc) or (native and native_will_retry(native, exc, b)):
                raise
            bus.publish(EventKind.FALLBACK, site.name, error=_error_name(exc))
            return await _run_fallback_async(fallback, site, a, exc)

    return with_fallback


def _async_bulkhead(next_: AsyncCall, bulkhead: Bulkhead, site: _Site, bus: EventBus) -> AsyncCall:
    queued = bulkhead.max_queued > 0
    release = bulkhead.release

    async def with_bulkhead(a: Any, b: Any) -> Any:
        try:
            if queued:
                await bulkhead.aacquire()
            else:
                bulkhead.try_acquire()
        except BulkheadFullError as exc:
            _publish_bulkhead(bus, site, bulkhead, exc)
            raise
        try:
            return await next_(a, b)
        finally:
            release()

    return with_bulkhead


def _async_retry(next_: AsyncCall, retry: Retry, site: _Site, bus: EventBus) -> AsyncCall:
    clock = retry.clock
    budget = retry.budget
    is_node = site.node

    async def with_retry(a: Any, b: Any) -> Any:
        if budget is not None:
            budget.deposit()
        started = clock.monotonic()
        attempt = 1
        delay = 0.0
        while True:
            try:
                if attempt == 1 or not is_node:
                    return await next_(a, b)
                with set_config_context(b) as context:
                    return await asyncio.create_task(next_(a, b), context=context)
            except GraphBubbleUp:
                raise
            except Exception as exc:
                next_delay = _retry_delay(retry, site, bus, exc, attempt, started, delay)
                if next_delay is None:
                    raise
                delay = next_delay
            await clock.asleep(delay)
            attempt += 1
            stats = _STATS.get()
            if stats is not None:
                stats.attempts = attempt
            if is_node:
                b = retry_config(b)

    return with_retry


def _async_breaker(next_: AsyncCall, breaker: CircuitBreaker, site: _Site) -> AsyncCall:
    name = site.name
    monotonic = breaker.clock.monotonic
    timed = breaker.timed
    if not breaker.shared:
        # Local state never does I/O: call the sync methods, skip the awaits.
        acquire = breaker.acquire
        on_success = breaker.on_success
        on_failure = breaker.on_failure
        release = breaker.release

        async def with_local_breaker(a: Any, b: Any) -> Any:
            permit = acquire(name)
            started = monotonic() if timed else 0.0
            try:
                result = await next_(a, b)
            except GraphBubbleUp:
                release(permit)
                raise
            except Exception as exc:
                on_failure(permit, exc, monotonic() - started if timed else 0.0)
                raise
            except BaseException:
                release(permit)
                raise
            on_success(permit, monotonic() - started if timed else 0.0)
            return result

        return with_local_breaker

    async def with_shared_breaker(a: Any, b: Any) -> Any:
        permit = await breaker.aacquire(name)
        started = monotonic() if timed else 0.0
        try:
            result = await next_(a, b)
        except GraphBubbleUp:
            await breaker.arelease(permit)
            raise
        except Exception as exc:
            await breaker.aon_failure(permit, exc, monotonic() - started if timed else 0.0)
            raise
        except BaseException:
            breaker.release_nowait(permit)
            raise
        await breaker.aon_success(permit, monotonic() - started if timed else 0.0)
        return result

    return with_shared_breaker


def _async_timeout(
    next_: AsyncCall, timeout: Timeout, site: _Site, bus: EventBus, thread_backed: bool
) -> AsyncCall:
    seconds = timeout.seconds
    guard_writes = site.node and thread_backed
    queues = DeadlineQueues(seconds)
    get_loop = asyncio.get_running_loop
    current_task = asyncio.current_task

    async def with_timeout(a: Any, b: Any) -> Any:
        # The semantics of ``asyncio.timeout`` (cancel the task; turn that cancellation, and
        # only that one, into a timeout), with a cheaper timer: see ``DeadlineQueue``.
        task = current_task()
        if task is None:  # not in a task (unusual): fall back to the standard library
            return await _async_timeout_stdlib(next_, seconds, site, bus, thread_backed, a, b)
        close = None
        if guard_writes:
            b, close = guard_late_writes(b)
        queue = queues.get(get_loop())
        cancelling = task.cancelling()
        deadline = queue.start(task)
        try:
            result = await next_(a, b)
        except asyncio.CancelledError:
            if deadline.fired and task.uncancel() <= cancelling:
                if close is not None:
                    close()
                bus.publish(
                    EventKind.TIMEOUT, site.name, timeout_s=seconds, thread_abandoned=thread_backed
                )
                raise _timeout_error(site, seconds) from None
            raise
        except BaseException:
            if deadline.fired:
                task.uncancel()
            raise
        finally:
            queue.finish(deadline)
        if deadline.fired:  # the attempt swallowed our cancellation and returned anyway
            task.uncancel()
        return result

    return with_timeout


async def _async_timeout_stdlib(
    next_: AsyncCall,
    seconds: float,
    site: _Site,
    bus: EventBus,
    thread_backed: bool,
    a: Any,
    b: Any,
) -> Any:
    scope = asyncio.timeout(seconds)
    try:
        async with scope:
            return await next_(a, b)
    except TimeoutError:
        if not scope.expired():
            raise  # the call's own TimeoutError, not ours
        bus.publish(EventKind.TIMEOUT, site.name, timeout_s=seconds, thread_abandoned=thread_backed)
        raise _timeout_error(site, seconds) from None
