"""Node middleware: circuit breaker, retry, timeout, bulkhead, fallback and degradation for
every node of a LangGraph graph, or any function, with one ``ResiliencePolicy``.

See ``docs/middleware.md`` for the pipeline order, how it composes with LangGraph's own
``retry_policy``/``timeout``/``error_handler``, and the events it publishes.
"""

from langgraph_resilient.observability.events import EventBus, EventKind, ResilienceEvent
from langgraph_resilient.runtime.breaker import CircuitBreaker, CircuitState
from langgraph_resilient.runtime.bulkhead import Bulkhead
from langgraph_resilient.runtime.clock import Clock, ManualClock, SystemClock
from langgraph_resilient.runtime.degradation import DegradationManager, ServiceLevel
from langgraph_resilient.runtime.fallback import Fallback
from langgraph_resilient.runtime.graph import ResilientNode, with_resilience
from langgraph_resilient.runtime.health import HealthChecker
from langgraph_resilient.runtime.policy import ResiliencePolicy
from langgraph_resilient.runtime.retry import Retry, is_transient, retry_after_hint
from langgraph_resilient.runtime.timeout import Timeout

__all__ = [
    "Bulkhead",
    "CircuitBreaker",
    "CircuitState",
    "Clock",
    "DegradationManager",
    "EventBus",
    "EventKind",
    "Fallback",
    "HealthChecker",
    "ManualClock",
    "ResilienceEvent",
    "ResiliencePolicy",
    "ResilientNode",
    "Retry",
    "ServiceLevel",
    "SystemClock",
    "Timeout",
    "is_transient",
    "retry_after_hint",
    "with_resilience",
]
