"""``Fallback``: turn a failure into a degraded result instead of an error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langgraph_resilient.errors import ConfigurationError

__all__ = ["Fallback"]


class Fallback:
    """When the call fails, return ``fn(state, error)`` instead of raising.

    For a graph node, ``state`` is the node's input and the return value is used as the node's
    output: a state update dict (or a ``Command``), exactly what the node would have returned.
    For a function guarded with ``policy.guard(fn)``, ``state`` is the function's first
    positional argument (None if it has none) and the return value replaces the function's.
    ``fn`` may be sync or async (async fallbacks need the async API: ``ainvoke``/``astream``
    or an async guarded function).

    Args:
        fn: ``(state, error) -> result``.
        on: which errors to handle: a predicate or exception types. Default: every error,
            including the middleware's own rejections (``CircuitOpenError``,
            ``BulkheadFullError``, ``NodeTimeoutError``, ``RetryBudgetExhaustedError``,
            ``FeatureDisabledError``). ``GraphInterrupt``/``ParentCommand`` and cancellation
            are never handled.

    Example::

        Fallback(lambda state, error: {"answer": "The assistant is busy; try again soon."})
    """

    __slots__ = ("fn", "handles")

    def __init__(
        self,
        fn: Callable[[Any, BaseException], Any],
        *,
        on: Callable[[BaseException], bool]
        | tuple[type[BaseException], ...]
        | type[BaseException]
        | None = None,
    ) -> None:
        if not callable(fn):
            raise ConfigurationError("Fallback(fn) needs a callable (state, error) -> result")
        self.fn = fn
        if on is None:
            self.handles: Callable[[BaseException], bool] = _always
        elif isinstance(on, (tuple, type)):
            types = on

            def _matches(exc: BaseException) -> bool:
                return isinstance(exc, types)

            self.handles = _matches
        else:
            self.handles = on

    def __repr__(self) -> str:
        return f"Fallback({getattr(self.fn, '__qualname__', self.fn)!r})"


def _always(exc: BaseException) -> bool:
    return True
