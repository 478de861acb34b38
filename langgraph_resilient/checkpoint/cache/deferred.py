"""``DeferredPublication``: what a lease holder wrote to a thread and will publish to Redis
once, when it releases the lease, instead of at every write."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from langgraph_resilient.checkpoint.records import CheckpointRecord, WriteRecord, is_special


@dataclass(slots=True)
class DeferredPublication:
    """What a lease holder wrote to a thread without publishing it to Redis yet.

    The holder is the thread's only writer, so instead of publishing every write (one Redis
    round trip each) it withdraws the thread's cached entries once, at its first write (a
    generation bump: nothing cached before can be served, and fills are refused while the
    lease key exists), and publishes the newest checkpoint of each namespace with its values
    and pending writes once, when it releases the lease. If it dies first, the entries stay
    withdrawn and readers go to the durable tier.
    """

    in_redis: Callable[[], bool]
    """Whether the lease still lives in Redis (the lease module's answer)."""
    gen: str | None = None
    """The generation after the withdrawal (``None``: not withdrawn yet)."""
    previous_gen: str = ""
    """The generation before it: L1 holds the values read then under it."""
    server: str | None = None
    """The Redis server the withdrawal was made on: a release on another one (a restart or a
    failover in between) only invalidates the thread there."""
    failed: bool = False
    """Redis failed for the holder: writes go the per-write way (marked dirty) from now on."""
    heads: dict[str, CheckpointRecord] = field(default_factory=dict)
    writes: dict[tuple[str, str], list[WriteRecord]] = field(default_factory=dict)
    withdrawing: asyncio.Lock = field(default_factory=asyncio.Lock)

    def add_checkpoint(self, record: CheckpointRecord) -> None:
        head = self.heads.get(record.checkpoint_ns)
        if head is None or record.checkpoint_id > head.checkpoint_id:
            self.heads[record.checkpoint_ns] = record

    def add_writes(self, ns: str, cid: str, writes: Sequence[WriteRecord]) -> None:
        self.writes.setdefault((ns, cid), []).extend(writes)

    def final_writes(self, ns: str, cid: str) -> list[WriteRecord]:
        """The checkpoint's writes as the durable tier holds them: a regular write keeps its
        first value, a special one (idx < 0) its last."""
        final: dict[tuple[str, int], WriteRecord] = {}
        for w in self.writes.get((ns, cid), []):
            key = (w.task_id, w.idx)
            if is_special(w.idx) or key not in final:
                final[key] = w
        return list(final.values())
