"""Every LangGraph internal the middleware touches, in one place.

LangGraph keeps these names private, so an upgrade may move them; this module is the only one
to update when it does (tests/runtime/test_graph_interop.py exercises each of them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph._internal._config import patch_configurable
from langgraph._internal._constants import (
    CONF,
    CONFIG_KEY_RESUMING,
    CONFIG_KEY_RUNTIME,
    CONFIG_KEY_SEND,
    CONFIG_KEY_STREAM,
)
from langgraph._internal._runnable import RunnableCallable
from langgraph.errors import GraphBubbleUp
from langgraph.pregel._read import DEFAULT_BOUND
from langgraph.pregel._retry import _reset_interrupt_counter, _should_retry_on
from langgraph.pregel._utils import _runnable_has_native_async
from langgraph.pregel.protocol import StreamProtocol
from langgraph.runtime import Runtime
from langgraph.types import RetryPolicy

__all__ = [
    "CONF",
    "DEFAULT_BOUND",
    "GraphBubbleUp",
    "RetryPolicy",
    "RunnableCallable",
    "guard_late_writes",
    "has_native_async",
    "native_attempt",
    "native_will_retry",
    "retry_config",
]


def has_native_async(runnable: Any) -> bool:
    """Whether LangGraph considers ``runnable`` truly async (not a sync function in a thread)."""
    try:
        return bool(_runnable_has_native_async(runnable))
    except Exception:
        return False


def retry_config(config: RunnableConfig) -> RunnableConfig:
    """The config LangGraph itself passes to a retried attempt.

    Marks the run as resuming (so a subgraph node resumes instead of restarting) and restarts
    the interrupt counter (so ``interrupt()`` calls reuse the answers this task already has).
    """
    config = patch_configurable(config, {CONFIG_KEY_RESUMING: True})
    return _reset_interrupt_counter(config)


def native_attempt(config: RunnableConfig | None) -> int:
    """LangGraph's 1-based attempt number for the running node (1 when unknown)."""
    if not config:
        return 1
    runtime = config.get(CONF, {}).get(CONFIG_KEY_RUNTIME)
    info = getattr(runtime, "execution_info", None)
    attempt = getattr(info, "node_attempt", 1)
    return attempt if isinstance(attempt, int) else 1


def native_will_retry(
    policies: tuple[RetryPolicy, ...], exc: Exception, config: RunnableConfig | None
) -> bool:
    """Whether LangGraph's own ``retry_policy`` will run this node again after ``exc``.

    Mirrors ``langgraph.pregel._retry``: the first policy whose ``retry_on`` matches decides,
    and the node is retried while its attempt number is below ``max_attempts``.
    """
    for policy in policies:
        if _should_retry_on(policy, exc):
            return native_attempt(config) < policy.max_attempts
    return False


class _WriteGuard:
    """Drops writes and stream output from an attempt the middleware has abandoned."""

    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open = True

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if self.open:
                return fn(*args, **kwargs)
            return None

        return guarded

    def close(self) -> None:
        self.open = False


_FIELDS: dict[type, tuple[str, ...]] = {}
"""Field names of each ``Runtime`` class, read once."""


def _with_stream_writer(runtime: Runtime[Any], writer: Callable[..., Any]) -> Runtime[Any]:
    """``runtime.override(stream_writer=writer)``, at half the cost: ``dataclasses.replace``
    introspects the class on every call, and this runs once per sync attempt under a timeout.
    Field by field, as the frozen dataclass's own ``__init__`` does (it has no
    ``__post_init__``; tests/runtime/test_graph_interop.py checks the copy)."""
    cls = type(runtime)
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    clone = object.__new__(cls)
    for name in names:
        object.__setattr__(clone, name, getattr(runtime, name))
    object.__setattr__(clone, "stream_writer", writer)
    return clone


def guard_late_writes(config: RunnableConfig) -> tuple[RunnableConfig, Callable[[], None]]:
    """A config whose send/stream/stream-writer stop working once ``close()`` is called.

    Used when a timed-out sync node keeps running in its thread: whatever it writes or streams
    after the timeout is dropped, as LangGraph does for its own timeouts.
    """
    conf = config.get(CONF)
    if not conf:
        return config, _noop
    guard = _WriteGuard()
    patch: dict[str, Any] = {}
    if (send := conf.get(CONFIG_KEY_SEND)) is not None:
        patch[CONFIG_KEY_SEND] = guard.wrap(send)
    if isinstance(stream := conf.get(CONFIG_KEY_STREAM), StreamProtocol):
        patch[CONFIG_KEY_STREAM] = StreamProtocol(guard.wrap(stream), stream.modes)
    if isinstance(runtime := conf.get(CONFIG_KEY_RUNTIME), Runtime):
        patch[CONFIG_KEY_RUNTIME] = _with_stream_writer(runtime, guard.wrap(runtime.stream_writer))
    if not patch:
        return config, _noop
    return patch_configurable(config, patch), guard.close


def _noop() -> None:
    return None
