"""langgraph-resilient: a tiered, fenced LangGraph checkpointer and resilient node middleware.

Everything public is re-exported here; nothing else in the package is public API.
"""

from langgraph_resilient.checkpoint import ResilientSaver
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

__all__ = [
    "BulkheadFullError",
    "CircuitOpenError",
    "ConfigurationError",
    "DurableWriteError",
    "FeatureDisabledError",
    "ForkedHistoryError",
    "InvalidConfigError",
    "LockTimeoutError",
    "NodeTimeoutError",
    "PayloadTooLargeError",
    "ResilientError",
    "ResilientSaver",
    "RetryBudgetExhaustedError",
    "SaverClosedError",
    "SchemaVersionError",
    "SerializationError",
    "StaleLeaseError",
    "SyncCallOnEventLoopError",
    "TierUnavailableError",
]

__version__ = "0.1.0"
