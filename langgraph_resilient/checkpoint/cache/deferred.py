"""``DeferredPublication``: what a lease holder wrote to a thread and will publish to Redis
once, when it releases the lease, instead of at every write."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from langgraph_resilient.checkpoint.lease.lease import Lease
from langgraph_resilient.checkpoint.records import CheckpointRecord, WriteRecord, is_special

KEPT = 32
"""Checkpoints per namespace a lease holder keeps to publish at release."""


@dataclass(slots=True)
class DeferredPublication:
    """What a lease holder wrote to a thread without publishing it to Redis yet.

    The lease's acquisition put its token into the thread's writes in flight (see
    cache/scripts.py): from then on no other replica trusts what Redis holds for the thread and
    no fill is accepted, so the holder, the thread's only writer, publishes nothing while it
    writes (no Redis on its write path) and reads what it wrote from this process. It publishes
    the newest checkpoint of each namespace with its values and writes once, when it releases
    the lease, and the release takes the token out. If it dies first, the token expires with the
    lease, and the next read bumps the thread's generation.
    """

    token: str
    """The lease's token in the writes in flight (``l:<lease token>``)."""
    gen: str
    """The thread's generation when the lease was acquired (L1 keeps values under it)."""
    server: str | None
    """The Redis server the lease's token went to: a release on another one (a restart or a
    failover in between) only invalidates the thread there."""
    in_redis: Callable[[], bool]
    """Whether the lease still lives in Redis (the lease module's answer)."""
    guarded_until: Callable[[], float]
    """``time.monotonic()`` until which the token surely keeps readers away (the lease's
    expiry less a safety margin): a write committed after it is not trusted to be deferred."""
    failed: bool = False
    """Deferring stopped (Redis failed, the lease moved, a write outlived the guard): the
    writes go the per-write way from then on, and the release invalidates the thread."""
    wrote: bool = False
    """Whether the holder wrote anything (the release republishes the thread only then)."""
    heads: dict[str, CheckpointRecord] = field(default_factory=dict)
    """The newest checkpoint the holder wrote in each namespace."""
    created: set[tuple[str, str]] = field(default_factory=set)
    """Every checkpoint the holder wrote (namespace, id): Redis never saw these."""
    recent: dict[str, list[CheckpointRecord]] = field(default_factory=dict)
    """The newest checkpoints the holder wrote in each namespace (at most ``KEPT``): all of
    them are published at release, so history listings stay served by Redis."""
    overflow: set[str] = field(default_factory=set)
    """Namespaces where the holder wrote more than ``KEPT`` checkpoints: their history index
    is no longer whole after the release."""
    writes: dict[tuple[str, str], list[WriteRecord]] = field(default_factory=dict)
    """The writes the holder stored, by checkpoint (namespace, id)."""

    @classmethod
    def for_lease(
        cls, lease: Lease, gen: str, server: str | None, in_redis: Callable[[], bool]
    ) -> DeferredPublication:
        """The deferred publication of a lease whose token went into the thread's writes in
        flight on ``server`` when its generation was ``gen``."""
        margin = lease.ttl_s / 3  # the renewal runs every ttl / 3: this leaves room for one
        return cls(
            token="l:" + lease.token,
            gen=gen,
            server=server,
            in_redis=in_redis,
            guarded_until=lambda: lease.expires_at - margin,
        )

    def guarded(self) -> bool:
        """Whether a write committed now may stay unpublished until the release."""
        return not self.failed and self.in_redis() and time.monotonic() < self.guarded_until()

    def touched(self, ns: str) -> bool:
        """Whether the holder wrote to namespace ``ns`` (then Redis holds an older state)."""
        return ns in self.heads or any(key[0] == ns for key in self.writes)

    def add_checkpoint(self, record: CheckpointRecord) -> None:
        self.wrote = True
        self.created.add((record.checkpoint_ns, record.checkpoint_id))
        recent = self.recent.setdefault(record.checkpoint_ns, [])
        recent.append(record)
        if len(recent) > KEPT:
            del recent[0]
            self.overflow.add(record.checkpoint_ns)
        head = self.heads.get(record.checkpoint_ns)
        if head is None or record.checkpoint_id > head.checkpoint_id:
            self.heads[record.checkpoint_ns] = record

    def add_writes(self, ns: str, cid: str, writes: Sequence[WriteRecord]) -> None:
        self.wrote = True
        self.writes.setdefault((ns, cid), []).extend(writes)

    def older_writes(self) -> list[tuple[str, str]]:
        """Checkpoints from before the lease the holder added writes to (a resume's): Redis
        may hold them with their earlier writes only."""
        return [key for key in self.writes if key not in self.created]

    def final_writes(self, ns: str, cid: str) -> list[WriteRecord]:
        """The checkpoint's writes as the durable tier holds them: a regular write keeps its
        first value, a special one (idx < 0) its last."""
        final: dict[tuple[str, int], WriteRecord] = {}
        for w in self.writes.get((ns, cid), []):
            key = (w.task_id, w.idx)
            if is_special(w.idx) or key not in final:
                final[key] = w
        return list(final.values())
