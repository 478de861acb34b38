"""Fencing: the epoch arithmetic of thread leases, and the checks a fenced write makes.

Pure functions, shared by both durable stores and the Redis lease (docs/lease.md has the
argument: Redis issues epochs in odd bands only and has the durable store confirm each new band
before using it; the store's own lease uses even bands).
"""

from __future__ import annotations

from langgraph_resilient.checkpoint.records import CheckpointRecord
from langgraph_resilient.errors import ForkedHistoryError, StaleLeaseError

EPOCH_BAND = 2**32
"""Epochs are grouped in bands of this size: ``band = epoch // EPOCH_BAND``. Redis issues epochs
only in odd bands, the durable-store lease only in even ones, so the two never hand out the same
number, and each side jumps to a band above the other's when it takes over."""


def fallback_epoch(current: int) -> int:
    """The epoch the durable-store lease takes after ``current``: the next number if ``current``
    is in an even (store) band, else the first number of the next (even) band."""
    band = current // EPOCH_BAND
    if band % 2 == 0:
        return current + 1
    return (band + 1) * EPOCH_BAND + 1


def band_start(epoch: int) -> int:
    """The first epoch of ``epoch``'s band."""
    return epoch - epoch % EPOCH_BAND


def redis_floor(epoch: int) -> int:
    """The first epoch of the first odd (Redis) band above ``epoch``'s band."""
    band = epoch // EPOCH_BAND + 1
    if band % 2 == 0:
        band += 1
    return band * EPOCH_BAND


def check_fence(thread_id: str, epoch: int, held: bool) -> None:
    """Raise :class:`StaleLeaseError` when a fenced write found a newer epoch."""
    if not held:
        raise StaleLeaseError(
            f"thread {thread_id!r}: the lease with epoch {epoch} was taken over by a newer "
            "holder; nothing was written. Stop working on this thread and re-read its state"
        )


def check_head(record: CheckpointRecord, advanced: bool) -> None:
    """Raise :class:`ForkedHistoryError` when a fenced put's parent is not the head."""
    if not advanced:
        raise ForkedHistoryError(
            f"thread {record.thread_id!r} namespace {record.checkpoint_ns!r}: checkpoint "
            f"{record.checkpoint_id} has parent {record.parent_id!r}, which is not the thread's "
            "head; nothing was written. Another writer advanced the thread: reload its state. "
            "(Under a lease, history is linear: fork with copy_thread instead.)"
        )
