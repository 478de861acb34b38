"""langgraph-resilient: a tiered, fenced LangGraph checkpointer and resilient node middleware.

Everything public is re-exported here; nothing else in the package is public API.
"""

from langgraph_resilient.checkpoint import ResilientSaver
from langgraph_resilient.checkpoint.lease import Lease
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
    "is_transient",
    "with_resilience",
]

__version__ = "0.1.0"
