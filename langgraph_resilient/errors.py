"""Typed errors raised by langgraph-resilient.

Every error derives from :class:`ResilientError`, so ``except ResilientError`` catches all of
them. Each message says what went wrong and what to do about it. The tree (and the built-in
each also derives from, so existing ``except`` clauses keep working)::

    ResilientError
    ├── ConfigurationError (ValueError)        bad settings or arguments; nothing written
    │   └── InvalidConfigError                 a RunnableConfig without thread_id, wrong types
    ├── SerializationError (ValueError)        the serde refused a value
    ├── PayloadTooLargeError (ValueError)      over max_payload_bytes
    ├── TierUnavailableError (ConnectionError) a tier could not be used; .tier names it
    │   └── DurableWriteError                  a write was not stored after the bounded retry
    ├── SchemaVersionError                     database schema newer than the code (or older)
    ├── SyncCallOnEventLoopError (RuntimeError) a blocking call on the saver's own loop
    ├── SaverClosedError (RuntimeError)        used outside its with/async with
    ├── StaleLeaseError                        a write under a lease another worker took over
    ├── ForkedHistoryError                     under a lease, a checkpoint not on the head
    ├── LockTimeoutError (TimeoutError)        the lease was not had within wait_s
    ├── CircuitOpenError                       a breaker rejected the call
    ├── BulkheadFullError                      a bulkhead had no slot and no queue room
    ├── RetryBudgetExhaustedError              the retry budget refused a retry
    ├── NodeTimeoutError (TimeoutError)        a node attempt outlived its Timeout
    └── FeatureDisabledError                   the node's feature is switched off
"""

from __future__ import annotations


class ResilientError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigurationError(ResilientError, ValueError):
    """The saver or a policy was configured or called with invalid input.

    Nothing was written. Fix the argument named in the message and call again.
    """


class InvalidConfigError(ConfigurationError):
    """A ``RunnableConfig`` lacks a required key (such as ``thread_id``) or has a wrong type.

    Pass ``{"configurable": {"thread_id": "..."}}`` (a non-empty string) to the graph call.
    """


class SerializationError(ResilientError, ValueError):
    """The saver's serializer refused a value (a type outside its allowlist, for instance).

    Nothing was written. Make the value serializable, or extend the allowlist with
    ``saver.with_allowlist(...)``.
    """


class PayloadTooLargeError(ResilientError, ValueError):
    """A checkpoint, channel value or write is larger than ``max_payload_bytes``.

    Nothing was written. Keep large data out of graph state (store a reference instead) or raise
    ``max_payload_bytes`` when creating the saver.
    """


class TierUnavailableError(ResilientError, ConnectionError):
    """A storage tier (Postgres, SQLite or Redis) could not be reached or used.

    The message names the tier and the address. Check that the server runs and that the URL is
    right; ``langgraph-resilient doctor`` reports what is misconfigured.
    """

    def __init__(self, tier: str, message: str) -> None:
        super().__init__(f"{tier}: {message}")
        self.tier = tier


class DurableWriteError(TierUnavailableError):
    """The durable tier did not acknowledge a write after the bounded retry.

    The checkpoint or writes were *not* stored; nothing is held only in a cache. The graph step
    fails so that LangGraph can resume it later from the last acknowledged checkpoint.
    """


class SchemaVersionError(ResilientError):
    """The database schema was written by a newer langgraph-resilient than this one.

    Upgrade the package on this replica; never point old code at a newer schema.
    """


class SyncCallOnEventLoopError(ResilientError, RuntimeError):
    """A blocking (sync) saver method was called on the event loop the saver runs on.

    Waiting there would deadlock. From async code call the ``a``-prefixed methods: the graph's
    ``ainvoke``, ``astream``, ``aget_state``, ``aget_state_history``, ``aupdate_state``, or the
    saver's ``aget_tuple``, ``aput``, ``alist``...
    """


class SaverClosedError(ResilientError, RuntimeError):
    """The saver was used before ``with``/``async with`` entered it, or after it exited.

    Use the saver inside ``with ResilientSaver.from_urls(...) as saver:`` (sync programs) or
    ``async with ResilientSaver.from_urls(...) as saver:`` (async programs).
    """


class StaleLeaseError(ResilientError):
    """A write was made under a thread lease that another worker has since taken over.

    Nothing was written. This worker must stop working on the thread; the new lease holder owns
    it. Re-read the thread's state before doing anything else with it.
    """


class ForkedHistoryError(ResilientError):
    """A checkpoint's parent is not the thread's current head, under an exclusive writer.

    Nothing was written. Another writer advanced the thread; reload its state and retry.
    """


class LockTimeoutError(ResilientError, TimeoutError):
    """The thread lease could not be acquired within ``wait_s``.

    Another worker is running this thread. Retry later, or raise ``wait_s``.
    """


class CircuitOpenError(ResilientError):
    """A circuit breaker is open (or its half-open probes are all taken) and rejected the call.

    The protected dependency has been failing. The call was not made; retry after
    ``retry_after_s`` seconds or use a fallback.
    """

    def __init__(self, name: str, retry_after_s: float | None = None) -> None:
        hint = f"; retry in {retry_after_s:.1f}s" if retry_after_s is not None else ""
        super().__init__(f"circuit breaker {name!r} is open{hint}")
        self.name = name
        self.retry_after_s = retry_after_s


class BulkheadFullError(ResilientError):
    """A bulkhead has no free slot and its queue is full; the call was rejected, not run.

    Too many concurrent calls to one dependency. Retry later or raise ``max_concurrent`` /
    ``max_queued``.
    """


class RetryBudgetExhaustedError(ResilientError):
    """A retry was refused because the policy's retry budget is spent.

    The dependency is failing broadly; retries would only add load. The original error is
    attached as ``__cause__``.
    """


class NodeTimeoutError(ResilientError, TimeoutError):
    """A node attempt took longer than its ``Timeout``.

    The attempt was abandoned (see the ``Timeout`` docs for what happens to a sync node's
    thread). It counts as a failure for the retry and breaker policies.
    """


class FeatureDisabledError(ResilientError):
    """The node's feature is switched off by the ``DegradationManager`` and it has no fallback.

    Give the node's policy a ``Fallback`` or raise the service level.
    """


def describe_error(exc: BaseException) -> str:
    """An exception as a line for an error message or a log: its type, its text, and its cause.

    Some drivers' ``repr`` names only a category (redis-py 8: ``network:ConnectionError``) or
    nothing at all (``TimeoutError()``); this keeps the text and the underlying cause (a refused
    connection, a certificate error).
    """
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) not in text:
        text += (
            f" (from {type(cause).__name__}: {cause})"
            if str(cause)
            else f" (from {type(cause).__name__})"
        )
    return text
