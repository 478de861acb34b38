"""The durable tier's interface: what the saver needs from Postgres or SQLite.

A store moves already-serialized records; it never sees the serializer. Each mutating method is
one transaction, and repeating it after a timeout changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from langgraph_resilient.checkpoint.records import (
    Batch,
    ChainLink,
    CheckpointRecord,
    CheckpointRow,
    ListQuery,
    Stored,
    Typed,
    WriteRecord,
)


@dataclass(frozen=True, slots=True)
class Skeleton:
    """A checkpoint without its values: enough to plan a prune."""

    checkpoint_ns: str
    checkpoint_id: str
    parent_id: str | None
    metadata: Typed
    channel_versions: dict[str, str]


class DurableStore(Protocol):
    """The source of truth. Implemented by ``PostgresStore`` and ``SqliteStore``."""

    tier_name: str
    """Name used in errors and metrics: ``"postgres"`` or ``"sqlite"``."""
    write_parallelism: int
    """How many group-commit flushes may run at once."""

    async def open(self) -> None:
        """Connect (failing fast with ``TierUnavailableError``)."""

    async def close(self) -> None:
        """Release every connection."""

    async def schema_version(self) -> int:
        """The schema version the database is at (0 when empty)."""

    async def migrate(self) -> int:
        """Apply missing migrations under a lock; returns the version reached."""

    def is_transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a connection-level failure worth a bounded retry."""

    async def write_batch(self, batch: Batch) -> Stored:
        """Store the plain (unfenced) checkpoints and writes of a batch in one transaction.

        Returns what it really changed: a repeated checkpoint was stored before (and may have
        changed since, by a prune) and a repeated regular write keeps its first value, so
        neither may be cached as sent.
        """

    async def write_fenced_batch(self, batch: Batch) -> Stored:
        """Store a batch of fenced writes (several leases' checkpoints and writes) in one
        transaction, all or nothing: if any fence or head check fails, or a thread carries two
        epochs, nothing is written and it raises (the caller replays the writes one by one)."""

    async def put_checkpoint(self, record: CheckpointRecord) -> bool:
        """Store a checkpoint and its new blobs in one transaction (idempotent); a record with
        an epoch is fenced (``StaleLeaseError``/``ForkedHistoryError``, nothing written).
        Returns whether it inserted the checkpoint (False: it was stored already)."""

    async def put_writes(
        self,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str,
        writes: Sequence[WriteRecord],
        epoch: int | None,
    ) -> set[tuple[str, int]]:
        """Store writes: regular ones keep their first value, special ones (idx < 0) overwrite.
        Returns ``(task_id, idx)`` of the writes it inserted or replaced."""

    async def get_checkpoint(
        self, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None
    ) -> CheckpointRow | None:
        """One checkpoint (the newest in the namespace when ``checkpoint_id`` is None)."""

    async def list_page(
        self, query: ListQuery, after: tuple[str, str, str] | None, size: int
    ) -> list[CheckpointRow]:
        """Up to ``size`` matching checkpoints, newest first, strictly after the keyset
        cursor ``after = (checkpoint_id, thread_id, checkpoint_ns)`` of the previous page.

        ``query.metadata_filter`` may be applied only loosely (as a pre-filter): the caller
        filters exactly.
        """

    async def parent_chain(
        self,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str | None,
        channels: Sequence[str],
    ) -> list[ChainLink]:
        """Ancestors of a checkpoint (its parent first) with seeds and writes of ``channels``.

        May stop early once every channel has a seed; callers must not rely on links beyond.
        """

    async def delete_thread(self, thread_id: str) -> None:
        """Remove every row of a thread."""

    async def delete_for_runs(self, run_keys: Sequence[str]) -> list[str]:
        """Remove checkpoints made by these runs and their writes; returns affected threads."""

    async def copy_thread(self, source: str, target: str) -> None:
        """Copy every row of ``source`` to ``target`` in one transaction."""

    async def skeletons(self, thread_id: str) -> list[Skeleton]:
        """Every checkpoint of a thread, without values."""

    async def seeded_versions(
        self, thread_id: str, channels: Sequence[str]
    ) -> set[tuple[str, str, str]]:
        """``(ns, channel, version)`` of the thread's non-empty blobs on ``channels``."""

    async def delete_checkpoints(self, thread_id: str, doomed: dict[str, list[str]]) -> None:
        """Delete the named checkpoints (by namespace), their writes, and blobs no kept
        checkpoint references, in one transaction."""

    async def mark_dirty(self, thread_ids: Sequence[str]) -> None:
        """Record threads written while Redis was unreachable."""

    async def dirty_threads(self, limit: int) -> list[tuple[str, int]]:
        """Up to ``limit`` dirty threads with the sequence number of their mark."""

    async def clear_dirty(self, entries: Sequence[tuple[str, int]]) -> None:
        """Forget dirty marks, unless a thread was marked again after ``entries`` were read."""

    async def threads_older_than(self, cutoff_epoch_s: float, after: str, limit: int) -> list[str]:
        """Up to ``limit`` threads with ids after ``after`` whose newest checkpoint was written
        before ``cutoff_epoch_s`` (Unix time), in id order."""

    # ---- leases (the fallback lease in the ``threads`` row; see lease.py and docs/lease.md)

    async def lease_acquire(self, thread_id: str, token: str, ttl_s: float) -> int | None:
        """Take the thread's lease row if it is free or expired, in one transaction: store
        ``token`` and an expiry ``ttl_s`` from now, and raise the epoch by
        :func:`fallback_epoch`. Returns the new epoch, or ``None`` while another token holds it.
        """

    async def lease_hold(self, thread_id: str, token: str, epoch: int, ttl_s: float) -> bool:
        """Renew (or take over, for a lease moving here from Redis) the lease row for ``token``
        at ``epoch``: only while no other token holds a live lease and the stored epoch is not
        above ``epoch``; raises the stored epoch to ``epoch``. False when refused."""

    async def lease_release(self, thread_id: str, token: str) -> None:
        """Clear the lease row if ``token`` holds it (never another holder's)."""

    async def lease_raise(self, thread_id: str, floor: int, token: str) -> EpochRaise:
        """Raise the stored epoch to ``floor`` if it is lower and no other token holds a live
        lease row, in one transaction (how a Redis epoch band is confirmed)."""

    async def thread_epoch(self, thread_id: str) -> int:
        """The thread's stored (fencing) epoch; 0 for a thread never fenced."""


class EpochRaise(NamedTuple):
    """Result of :meth:`DurableStore.lease_raise`."""

    raised: bool
    """The stored epoch was below the floor and is now the floor."""
    held: bool
    """Another token holds a live lease row (then nothing was raised)."""
    epoch: int
    """The stored epoch when the statement ran (before any raise)."""
