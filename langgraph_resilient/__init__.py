"""langgraph-resilient: a tiered, fenced LangGraph checkpointer and resilient node middleware.

Everything public is re-exported here; nothing else in the package is public API.

The names are imported on first use (PEP 562), not when the package is imported: importing
``langgraph_resilient`` (as ``langgraph-resilient --help`` and ``--version`` do) must not pay
for importing LangGraph. ``from langgraph_resilient import ResilientSaver`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from langgraph_resilient.checkpoint import ResilientSaver
    from langgraph_resilient.checkpoint.lease.exclusive import ExclusiveGraph
    from langgraph_resilient.checkpoint.lease.lease import Lease
    from langgraph_resilient.errors import (
        BulkheadFullError,
        CircuitOpenError,
        ConfigurationError,
        DurableWriteError,
        FeatureDisabledError,
        ForkedHistoryError,
        InvalidConfigError,
        LockTimeoutError,
        NodeTimeoutError,
        PayloadTooLargeError,
        ResilientError,
        RetryBudgetExhaustedError,
        SaverClosedError,
        SchemaVersionError,
        SerializationError,
        StaleLeaseError,
        SyncCallOnEventLoopError,
        TierUnavailableError,
    )
    from langgraph_resilient.node_cache import TieredCache
    from langgraph_resilient.observability.metrics import install_node_metrics
    from langgraph_resilient.runtime import (
        Bulkhead,
        CircuitBreaker,
        CircuitState,
        DegradationManager,
        EventBus,
        EventKind,
        Fallback,
        HealthChecker,
        ManualClock,
        ResilienceEvent,
        ResiliencePolicy,
        Retry,
        ServiceLevel,
        Timeout,
        is_transient,
        with_resilience,
    )
    from langgraph_resilient.server import create_app

_ERRORS = "langgraph_resilient.errors"
_RUNTIME = "langgraph_resilient.runtime"

_EXPORTS: dict[str, str] = {
    # name -> the module it is defined in (or re-exported from)
    "ResilientSaver": "langgraph_resilient.checkpoint",
    "Lease": "langgraph_resilient.checkpoint.lease.lease",
    "ExclusiveGraph": "langgraph_resilient.checkpoint.lease.exclusive",
    "TieredCache": "langgraph_resilient.node_cache",
    "install_node_metrics": "langgraph_resilient.observability.metrics",
    "create_app": "langgraph_resilient.server",
    "BulkheadFullError": _ERRORS,
    "CircuitOpenError": _ERRORS,
    "ConfigurationError": _ERRORS,
    "DurableWriteError": _ERRORS,
    "FeatureDisabledError": _ERRORS,
    "ForkedHistoryError": _ERRORS,
    "InvalidConfigError": _ERRORS,
    "LockTimeoutError": _ERRORS,
    "NodeTimeoutError": _ERRORS,
    "PayloadTooLargeError": _ERRORS,
    "ResilientError": _ERRORS,
    "RetryBudgetExhaustedError": _ERRORS,
    "SaverClosedError": _ERRORS,
    "SchemaVersionError": _ERRORS,
    "SerializationError": _ERRORS,
    "StaleLeaseError": _ERRORS,
    "SyncCallOnEventLoopError": _ERRORS,
    "TierUnavailableError": _ERRORS,
    "Bulkhead": _RUNTIME,
    "CircuitBreaker": _RUNTIME,
    "CircuitState": _RUNTIME,
    "DegradationManager": _RUNTIME,
    "EventBus": _RUNTIME,
    "EventKind": _RUNTIME,
    "Fallback": _RUNTIME,
    "HealthChecker": _RUNTIME,
    "ManualClock": _RUNTIME,
    "ResilienceEvent": _RUNTIME,
    "ResiliencePolicy": _RUNTIME,
    "Retry": _RUNTIME,
    "ServiceLevel": _RUNTIME,
    "Timeout": _RUNTIME,
    "is_transient": _RUNTIME,
    "with_resilience": _RUNTIME,
}

__all__ = [
    "Bulkhead",
    "BulkheadFullError",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "ConfigurationError",
    "DegradationManager",
    "DurableWriteError",
    "EventBus",
    "EventKind",
    "ExclusiveGraph",
    "Fallback",
    "FeatureDisabledError",
    "ForkedHistoryError",
    "HealthChecker",
    "InvalidConfigError",
    "Lease",
    "LockTimeoutError",
    "ManualClock",
    "NodeTimeoutError",
    "PayloadTooLargeError",
    "ResilienceEvent",
    "ResiliencePolicy",
    "ResilientError",
    "ResilientSaver",
    "Retry",
    "RetryBudgetExhaustedError",
    "SaverClosedError",
    "SchemaVersionError",
    "SerializationError",
    "ServiceLevel",
    "StaleLeaseError",
    "SyncCallOnEventLoopError",
    "TierUnavailableError",
    "TieredCache",
    "Timeout",
    "create_app",
    "install_node_metrics",
    "is_transient",
    "with_resilience",
]


_PLUG = "langgraph_server:checkpointer"
"""LangGraph Server's loader reads the module path ``pkg.mod:attr`` as the attribute
``mod:attr`` of ``pkg`` (it splits at the last dot), so the plug's documented path
``langgraph_resilient.langgraph_server:checkpointer`` is looked up here (the dotted form
``langgraph_resilient.langgraph_server.checkpointer`` works too)."""


def _plug_checkpointer() -> Any:
    """``langgraph_server.checkpointer()``, imported when LangGraph Server first calls it (its
    loader reads the module's ``__dict__``, so the name must exist before any import)."""
    return importlib.import_module("langgraph_resilient.langgraph_server").checkpointer()


globals()[_PLUG] = _plug_checkpointer


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'langgraph_resilient' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
