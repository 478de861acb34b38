"""Graphs that hold the thread lease around every call (``exclusive_threads=True``).

``ExclusiveGraph.wrap(graph)`` makes every root ``invoke``/``ainvoke``/``stream``/``astream``/
``update_state`` of a compiled graph (or of the graph a ``StateGraph`` compiles to) hold
``saver.lock_thread(thread_id)`` for its whole duration; see :mod:`.lock` for the lease.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from langgraph_resilient.checkpoint.lease.lock import ThreadLock
from langgraph_resilient.errors import ConfigurationError

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

__all__ = ["ExclusiveGraph"]

G = TypeVar("G")


def _graph_lock(graph: Any, config: RunnableConfig | None) -> ThreadLock | None:
    """The lease a root call of an exclusive graph must hold (None: run without one)."""
    conf: Mapping[str, Any] = {}
    if isinstance(config, Mapping):
        conf = config.get("configurable") or {}
    defaults: Mapping[str, Any] = (getattr(graph, "config", None) or {}).get("configurable") or {}
    if conf.get("checkpoint_ns") or "__pregel_task_id" in conf:
        return None  # a subgraph call: the root call holds the lease
    thread_id = conf.get("thread_id", defaults.get("thread_id"))
    if thread_id is None:
        return None  # LangGraph itself reports the missing thread_id
    saver: Any = getattr(graph, "checkpointer", None)
    if not callable(getattr(saver, "lock_thread", None)):
        raise ConfigurationError(
            "exclusive_threads needs the graph compiled with a ResilientSaver: "
            "builder.compile(checkpointer=saver)"
        )
    lock: ThreadLock = saver.lock_thread(
        str(thread_id), ttl_s=graph.lease_ttl_s, wait_s=graph.lease_wait_s
    )
    return lock


class ExclusiveGraph:
    """Mixed into a compiled graph by :meth:`wrap`: every root ``invoke``, ``ainvoke``,
    ``stream``, ``astream``, ``update_state`` and ``aupdate_state`` holds the lease of the call's
    ``thread_id`` (``saver.lock_thread``) for its whole duration.

    Two workers running the same thread then never overlap: the second waits up to
    ``lease_wait_s`` and then raises ``LockTimeoutError``. A worker that stalls past its lease
    has its later writes refused (``StaleLeaseError``) instead of forking the thread. Subgraph
    calls and calls nested in an already held lease run under the outer lease.
    """

    __slots__ = ()
    lease_ttl_s: float = 30.0
    """Lease time to live; renewed in the background every third of it."""
    lease_wait_s: float = 10.0
    """How long a call waits for the lease before ``LockTimeoutError``."""

    @classmethod
    def wrap(cls, graph: G, *, ttl_s: float = 30.0, wait_s: float = 10.0) -> G:
        """A copy of ``graph`` that holds the thread lease around each call.

        ``graph`` is a compiled graph (the copy is still an instance of its class, and of
        ``ExclusiveGraph``; ``with_config`` and ``copy`` keep the behaviour) or a ``StateGraph``
        (the copy's ``compile()`` returns such a graph: wrap it after the last ``add_node``).
        The compiled graph must use a ``ResilientSaver`` as its checkpointer.

        Raises:
            ConfigurationError: ``graph`` is neither, or ``ttl_s``/``wait_s`` are invalid.
        """
        from langgraph.graph import StateGraph
        from langgraph.pregel import Pregel

        if not ttl_s > 0 or not wait_s >= 0:
            raise ConfigurationError("ttl_s must be > 0 and wait_s >= 0 seconds")
        settings = {"lease_ttl_s": float(ttl_s), "lease_wait_s": float(wait_s)}
        if isinstance(graph, StateGraph):
            klass: Any = _subclass(_ExclusiveBuilder, type(graph), settings)
            builder = klass.__new__(klass)
            builder.__dict__.update(vars(graph))  # a shallow copy, as with_resilience makes
            result: G = builder
            return result
        if not isinstance(graph, Pregel):
            raise ConfigurationError(
                f"ExclusiveGraph.wrap takes a compiled graph (builder.compile(...)) or a "
                f"StateGraph, not {type(graph).__name__}"
            )
        attrs = {k: v for k, v in graph.__dict__.items() if k != "__orig_class__"}
        wrapped: G = _subclass(cls, type(graph), settings)(**attrs)
        return wrapped

    def stream(self, input: Any, config: Any = None, **kwargs: Any) -> Iterator[Any]:
        """``stream`` (and ``invoke``, which consumes it) under the thread's lease."""
        base: Any = super()
        lock = _graph_lock(self, config)
        if lock is None:
            yield from base.stream(input, config, **kwargs)
            return
        with lock:
            yield from base.stream(input, config, **kwargs)

    async def astream(self, input: Any, config: Any = None, **kwargs: Any) -> AsyncIterator[Any]:
        """``astream`` (and ``ainvoke``, which consumes it) under the thread's lease."""
        base: Any = super()
        lock = _graph_lock(self, config)
        if lock is None:
            async for chunk in base.astream(input, config, **kwargs):
                yield chunk
            return
        async with lock:
            async for chunk in base.astream(input, config, **kwargs):
                yield chunk

    def update_state(self, config: Any, values: Any, as_node: Any = None, **kwargs: Any) -> Any:
        """``update_state`` under the thread's lease."""
        base: Any = super()
        lock = _graph_lock(self, config)
        if lock is None:
            return base.update_state(config, values, as_node, **kwargs)
        with lock:
            return base.update_state(config, values, as_node, **kwargs)

    async def aupdate_state(
        self, config: Any, values: Any, as_node: Any = None, **kwargs: Any
    ) -> Any:
        """``aupdate_state`` under the thread's lease."""
        base: Any = super()
        lock = _graph_lock(self, config)
        if lock is None:
            return await base.aupdate_state(config, values, as_node, **kwargs)
        async with lock:
            return await base.aupdate_state(config, values, as_node, **kwargs)


class _ExclusiveBuilder:
    """Mixed into a ``StateGraph`` by ``ExclusiveGraph.wrap``: ``compile()`` returns an
    ``ExclusiveGraph`` with the same lease settings."""

    __slots__ = ()
    lease_ttl_s: float = 30.0
    lease_wait_s: float = 10.0

    def compile(self, *args: Any, **kwargs: Any) -> Any:
        base: Any = super()
        return ExclusiveGraph.wrap(
            base.compile(*args, **kwargs), ttl_s=self.lease_ttl_s, wait_s=self.lease_wait_s
        )


_SUBCLASSES: dict[tuple[type, type, tuple[tuple[str, float], ...]], type] = {}


def _subclass(mixin: type, base: type, settings: dict[str, float]) -> type:
    """``class Exclusive<Base>(mixin, base)`` with ``settings`` as class attributes (cached)."""
    while issubclass(base, mixin):
        base = next(b for b in base.__bases__ if b is not mixin)
    key = (mixin, base, tuple(sorted(settings.items())))
    klass = _SUBCLASSES.get(key)
    if klass is None:
        namespace: dict[str, Any] = {**settings, "__slots__": ()}  # same layout as `base`
        klass = _SUBCLASSES[key] = type(f"Exclusive{base.__name__}", (mixin, base), namespace)
    return klass
