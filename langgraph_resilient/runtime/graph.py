"""``with_resilience``: put a ``ResiliencePolicy`` around every node of a LangGraph graph."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import replace as dc_replace
from typing import Any, Literal, TypeVar, overload

from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import ensure_config
from langgraph.graph.state import StateGraph
from langgraph.pregel import Pregel

from langgraph_resilient.errors import ConfigurationError
from langgraph_resilient.runtime._compat import (
    DEFAULT_BOUND,
    RetryPolicy,
    RunnableCallable,
    has_native_async,
)
from langgraph_resilient.runtime.degradation import DegradationManager
from langgraph_resilient.runtime.policy import (
    AsyncCall,
    ResiliencePolicy,
    SyncCall,
    _Site,
    build_async,
    build_sync,
)

__all__ = ["ResilientNode", "with_resilience"]

NativeRetry = Literal["defer", "replace", "both"]
G = TypeVar("G", bound=Pregel[Any, Any, Any, Any])

#: Shadows a graph-wide LangGraph retry default when ``native_retry="replace"``.
_NO_NATIVE_RETRY = RetryPolicy(max_attempts=1)
_START = "__start__"


class ResilientNode(RunnableCallable):
    """A graph node's runnable wrapped in a resilience pipeline (built by ``with_resilience``).

    Called by LangGraph exactly like the node it wraps, with the same input and config, so
    config/runtime/store/writer injection, ``Command``, ``Send``, ``interrupt()`` and
    ``get_config()`` keep working. ``inner`` is the original runnable.
    """

    def __init__(
        self,
        inner: Runnable[Any, Any],
        *,
        name: str,
        policy: ResiliencePolicy,
        sync_call: SyncCall,
        async_call: AsyncCall,
        native_async: bool,
    ) -> None:
        # LangGraph finds a subgraph node's graph by reading the closure of a
        # RunnableCallable's function: these two close over ``inner`` for that reason.
        def node(input: Any, config: RunnableConfig) -> Any:
            assert inner is not None
            return sync_call(input, config)

        async def anode(input: Any, config: RunnableConfig) -> Any:
            assert inner is not None
            return await async_call(input, config)

        super().__init__(
            node, anode if native_async else None, name=name, trace=False, recurse=False
        )
        self.inner = inner
        self.policy = policy
        self._sync = sync_call
        self._async = async_call

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Run the node through the sync pipeline.

        Extra keyword arguments (LangGraph passes none) go to the wrapped runnable directly,
        without the pipeline.
        """
        if kwargs:
            return self.inner.invoke(input, config, **kwargs)
        return self._sync(input, config if config is not None else ensure_config())

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Run the node through the async pipeline."""
        if kwargs:
            return await self.inner.ainvoke(input, config, **kwargs)
        return await self._async(input, config if config is not None else ensure_config())


def _sync_only(runnable: Runnable[Any, Any]) -> bool:
    return not isinstance(runnable, RunnableCallable) or runnable.func is not None


def _wrap_runnable(
    runnable: Runnable[Any, Any],
    path: str,
    policy: ResiliencePolicy,
    native: tuple[RetryPolicy, ...],
    our_retry: bool,
) -> ResilientNode:
    site = _Site(path, node=True, native_retry=native)
    native_async = has_native_async(runnable)

    sync_call: SyncCall
    if _sync_only(runnable):
        sync_call = build_sync(policy, site, runnable.invoke, retry=our_retry)
    else:  # async-only node: let LangGraph's own error surface unchanged
        sync_call = runnable.invoke
    async_call = build_async(
        policy, site, runnable.ainvoke, thread_backed=not native_async, retry=our_retry
    )
    return ResilientNode(
        runnable,
        name=path.rsplit("/", 1)[-1],
        policy=policy,
        sync_call=sync_call,
        async_call=async_call,
        native_async=native_async,
    )


def _as_tuple(policies: RetryPolicy | Any | None) -> tuple[RetryPolicy, ...]:
    if policies is None:
        return ()
    if isinstance(policies, RetryPolicy):
        return (policies,)
    return tuple(policies)


class _Plan:
    """Which policy each node gets; shared by the StateGraph and compiled-graph paths."""

    def __init__(
        self,
        policy: ResiliencePolicy | None,
        nodes: Mapping[str, ResiliencePolicy | None],
        degradation: DegradationManager | None,
        subgraphs: bool,
        native_retry: NativeRetry,
        include_error_handlers: bool,
    ) -> None:
        if native_retry not in ("defer", "replace", "both"):
            raise ConfigurationError("native_retry must be 'defer', 'replace' or 'both'")
        for key, value in nodes.items():
            if value is not None and not isinstance(value, ResiliencePolicy):
                raise ConfigurationError(
                    f"nodes[{key!r}] must be a ResiliencePolicy or None, not {type(value)}"
                )
        if policy is not None and not isinstance(policy, ResiliencePolicy):
            raise ConfigurationError(
                f"with_resilience(policy=...) takes a ResiliencePolicy, not {type(policy)}"
            )
        self.policy = policy
        self.nodes = dict(nodes)
        self.degradation = degradation
        self.subgraphs = subgraphs
        self.native_retry = native_retry
        self.include_error_handlers = include_error_handlers
        self.used: set[str] = set()

    def policy_for(
        self, path: str, *, is_error_handler: bool, is_subgraph: bool
    ) -> ResiliencePolicy | None:
        if path in self.nodes:
            self.used.add(path)
            chosen = self.nodes[path]
        elif is_error_handler and not self.include_error_handlers:
            return None
        elif is_subgraph and self.subgraphs:
            return None  # its inner nodes are wrapped instead: never retry at two levels
        else:
            chosen = self.policy
        if chosen is not None and chosen.feature is not None and chosen.degradation is None:
            if self.degradation is None:
                raise ConfigurationError(
                    f"node {path!r}: the policy has feature={chosen.feature!r} but no "
                    "DegradationManager; pass degradation= to with_resilience"
                )
            chosen = chosen.replace(degradation=self.degradation)
        return chosen

    def check_unused(self) -> None:
        unknown = set(self.nodes) - self.used
        if unknown:
            raise ConfigurationError(
                f"with_resilience(nodes=...) names unknown nodes {sorted(unknown)}; use node "
                "names of the graph (and 'subgraph_node/inner_node' with subgraphs=True)"
            )

    def wrap(
        self,
        runnable: Runnable[Any, Any],
        path: str,
        policy: ResiliencePolicy,
        native: tuple[RetryPolicy, ...],
    ) -> tuple[ResilientNode, bool]:
        """Wrap; returns the node and whether LangGraph's retry must be switched off."""
        our_retry = policy.retry is not None and policy.retry.max_attempts > 1
        if native and our_retry and self.native_retry == "defer":
            our_retry = False  # LangGraph's retry_policy on this node wins
        replace_native = bool(native) and our_retry and self.native_retry == "replace"
        kept_native = () if replace_native else native
        return _wrap_runnable(runnable, path, policy, kept_native, our_retry), replace_native


def _subgraph_of(runnable: Any) -> Pregel[Any, Any, Any, Any] | None:
    return runnable if isinstance(runnable, Pregel) else None


def _wrap_state_graph(
    builder: StateGraph[Any, Any, Any, Any], plan: _Plan, prefix: str
) -> StateGraph[Any, Any, Any, Any]:
    new = copy.copy(builder)
    new.nodes = {}
    new.edges = set(builder.edges)
    new.waiting_edges = set(builder.waiting_edges)
    new.branches = copy.copy(builder.branches)
    for key, value in builder.branches.items():
        new.branches[key] = dict(value)
    new.channels = dict(builder.channels)
    new.managed = dict(builder.managed)
    new.schemas = dict(builder.schemas)
    new.compiled = False
    defaults = getattr(builder, "_node_defaults", None)
    if defaults is not None:
        new._node_defaults = copy.copy(defaults)
    default_retry = _as_tuple(getattr(defaults, "retry_policy", None))

    for name, spec in builder.nodes.items():
        path = f"{prefix}{name}"
        runnable: Any = spec.runnable
        sub = _subgraph_of(runnable)
        if sub is not None and plan.subgraphs:
            runnable = _wrap_compiled(sub, plan, f"{path}/")
        policy = plan.policy_for(
            path, is_error_handler=spec.is_error_handler, is_subgraph=sub is not None
        )
        if policy is None:
            new.nodes[name] = (
                dc_replace(spec, runnable=runnable) if runnable is not spec.runnable else spec
            )
            continue
        native = _as_tuple(spec.retry_policy) or default_retry
        wrapped, replace_native = plan.wrap(runnable, path, policy, native)
        new.nodes[name] = dc_replace(
            spec,
            runnable=wrapped,
            retry_policy=_NO_NATIVE_RETRY if replace_native else spec.retry_policy,
        )
    return new


def _wrap_compiled(graph: G, plan: _Plan, prefix: str) -> G:
    graph_retry = _as_tuple(getattr(graph, "retry_policy", None))
    nodes = {}
    for name, node in graph.nodes.items():
        if name == _START or node.bound is DEFAULT_BOUND:
            nodes[name] = node
            continue
        path = f"{prefix}{name}"
        bound: Any = node.bound
        sub = _subgraph_of(bound)
        update: dict[str, Any] = {}
        if sub is not None and plan.subgraphs:
            bound = _wrap_compiled(sub, plan, f"{path}/")
            update["bound"] = bound
            update["subgraphs"] = [bound]
        policy = plan.policy_for(
            path,
            is_error_handler=bool(getattr(node, "is_error_handler", False)),
            is_subgraph=sub is not None,
        )
        if policy is not None:
            native = _as_tuple(node.retry_policy) or graph_retry
            wrapped, replace_native = plan.wrap(bound, path, policy, native)
            update["bound"] = wrapped
            if replace_native:
                update["retry_policy"] = (_NO_NATIVE_RETRY,)
        nodes[name] = node.copy(update) if update else node
    return graph.copy({"nodes": nodes})


@overload
def with_resilience(
    target: StateGraph[Any, Any, Any, Any],
    policy: ResiliencePolicy | None = None,
    *,
    nodes: Mapping[str, ResiliencePolicy | None] | None = None,
    degradation: DegradationManager | None = None,
    subgraphs: bool = False,
    native_retry: NativeRetry = "defer",
    include_error_handlers: bool = False,
    exclusive_threads: bool = False,
    lease_ttl_s: float = 30.0,
    lease_wait_s: float = 10.0,
) -> StateGraph[Any, Any, Any, Any]: ...


@overload
def with_resilience(
    target: G,
    policy: ResiliencePolicy | None = None,
    *,
    nodes: Mapping[str, ResiliencePolicy | None] | None = None,
    degradation: DegradationManager | None = None,
    subgraphs: bool = False,
    native_retry: NativeRetry = "defer",
    include_error_handlers: bool = False,
    exclusive_threads: bool = False,
    lease_ttl_s: float = 30.0,
    lease_wait_s: float = 10.0,
) -> G: ...


def with_resilience(
    target: StateGraph[Any, Any, Any, Any] | G,
    policy: ResiliencePolicy | None = None,
    *,
    nodes: Mapping[str, ResiliencePolicy | None] | None = None,
    degradation: DegradationManager | None = None,
    subgraphs: bool = False,
    native_retry: NativeRetry = "defer",
    include_error_handlers: bool = False,
    exclusive_threads: bool = False,
    lease_ttl_s: float = 30.0,
    lease_wait_s: float = 10.0,
) -> StateGraph[Any, Any, Any, Any] | G:
    """Guard every node of a graph with resilience policies; the input graph is not changed.

    Args:
        target: a ``StateGraph`` (returns a new, uncompiled ``StateGraph``: call
            ``with_resilience`` after the last ``add_node``/``set_node_defaults``, then
            ``compile()``), or a compiled graph (returns a compiled graph with the same
            checkpointer, store, interrupts and config).
        policy: applied to every node (None: only the nodes named in ``nodes``).
        nodes: per-node overrides: ``{"search": other_policy, "format": None}`` (None leaves
            the node unwrapped). With ``subgraphs=True`` name inner nodes as
            ``"subgraph_node/inner_node"``. Unknown names raise ``ConfigurationError``.
        degradation: the ``DegradationManager`` for policies with ``feature=`` that do not
            carry their own.
        subgraphs: also wrap the nodes of subgraphs added directly as nodes (recursively).
            The subgraph node itself is then left unwrapped unless named in ``nodes``, so
            nothing is retried at two levels. (A subgraph invoked from inside a node function
            is not visible here: wrap it with ``with_resilience`` where you build it.)
        native_retry: what to do when a node also has LangGraph's own ``retry_policy`` (its
            own or ``set_node_defaults``/the graph's): ``"defer"`` (default) keeps LangGraph's
            and leaves our ``Retry`` out for that node; ``"replace"`` switches LangGraph's off
            for that node and uses ours; ``"both"`` keeps both (attempts multiply). Either way
            our ``Fallback`` waits until LangGraph's retries are used up.
        include_error_handlers: also wrap LangGraph ``error_handler`` nodes (off by default:
            a handler guarded by the failing dependency's breaker would be rejected too).
        exclusive_threads: hold the thread's single-writer lease (``saver.lock_thread``)
            around every ``invoke``/``ainvoke``/``stream``/``astream``/``update_state`` for the
            call's ``thread_id``, so two workers never run one thread at once; the graph must
            be compiled with a ``ResilientSaver``. See ``ExclusiveGraph`` in the lease module.
        lease_ttl_s: the lease's time to live (renewed every third of it while held).
        lease_wait_s: how long a call waits for the lease before ``LockTimeoutError``.

    Returns:
        A graph of the same kind as ``target``.
    """
    plan = _Plan(policy, nodes or {}, degradation, subgraphs, native_retry, include_error_handlers)
    result: StateGraph[Any, Any, Any, Any] | G
    if isinstance(target, StateGraph):
        result = _wrap_state_graph(target, plan, "")
    elif isinstance(target, Pregel):
        result = _wrap_compiled(target, plan, "")
    else:
        raise ConfigurationError(
            f"with_resilience() takes a StateGraph or a compiled graph, not {type(target)}"
        )
    plan.check_unused()
    if exclusive_threads:
        from langgraph_resilient.checkpoint.lease.exclusive import ExclusiveGraph

        result = ExclusiveGraph.wrap(result, ttl_s=lease_ttl_s, wait_s=lease_wait_s)
    return result
