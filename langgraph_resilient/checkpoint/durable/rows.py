"""Batches as the rows a durable store writes: each key once, as separate statements would
leave it (a value or checkpoint never changes; regular writes keep their first value, special
ones their last)."""

from __future__ import annotations

from langgraph_resilient.checkpoint.records import Batch, CheckpointRecord, is_special

BlobRow = tuple[str, str, str, str, str, bytes | None]
WriteRow = tuple[str, str, str, str, str, int, str, str, bytes]


def blob_rows(batch: Batch) -> list[BlobRow]:
    """``(thread, ns, channel, version, type, data)`` of a batch, each key once (first wins:
    a channel version never changes)."""
    rows: dict[tuple[str, str, str, str], BlobRow] = {}
    for cp in batch.checkpoints:
        for b in cp.blobs:
            key = (cp.thread_id, cp.checkpoint_ns, b.channel, b.version)
            rows.setdefault(key, (*key, b.type, b.data))
    return list(rows.values())


def write_rows(batch: Batch) -> list[WriteRow]:
    """``(thread, ns, checkpoint, task, path, idx, channel, type, data)`` of a batch, each key
    once: a regular write keeps its first value, a special one (idx < 0) its last, exactly as
    separate statements would leave them."""
    rows: dict[tuple[str, str, str, str, int], WriteRow] = {}
    for op in batch.writes:
        for w in op.writes:
            key = (op.thread_id, op.checkpoint_ns, op.checkpoint_id, w.task_id, w.idx)
            if not is_special(w.idx) and key in rows:
                continue
            rows[key] = (*key[:4], w.task_path, w.idx, w.channel, w.type, w.data)
    return list(rows.values())


def checkpoint_records(batch: Batch) -> list[CheckpointRecord]:
    """The batch's checkpoints, each key once (the first: a checkpoint never changes)."""
    seen: dict[tuple[str, str, str], CheckpointRecord] = {}
    for cp in batch.checkpoints:
        seen.setdefault((cp.thread_id, cp.checkpoint_ns, cp.checkpoint_id), cp)
    return list(seen.values())


class MixedEpochs(Exception):
    """A fenced batch holds writes of one thread under two epochs (a lease was taken over
    while its writes were queued): it must be replayed write by write, so that the older
    epoch's writes are refused."""


def fence_epochs(batch: Batch) -> dict[str, int]:
    """The epoch each thread of a fenced batch writes under, in thread order: the batch takes
    the threads' fence rows in that order, one global order, so two batches holding the same
    threads never deadlock (Postgres would break one after ``deadlock_timeout``)."""
    epochs: dict[str, int] = {}
    for thread_id, epoch in [
        *((c.thread_id, c.epoch) for c in batch.checkpoints),
        *((w.thread_id, w.epoch) for w in batch.writes),
    ]:
        if epoch is None or epochs.setdefault(thread_id, epoch) != epoch:
            raise MixedEpochs(thread_id)
    return dict(sorted(epochs.items()))
