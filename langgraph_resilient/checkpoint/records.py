"""Rows exchanged between the saver and a durable store.

The saver turns LangGraph objects into these (serialized, validated) records; a store only moves
bytes. Keeping the boundary here means a store never imports the serializer and never decides
what a checkpoint means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Typed = tuple[str, bytes]
"""A value serialized by the saver's ``serde``: ``(type tag, bytes)``."""

EMPTY_BLOB_TYPE = "empty"
"""Type tag of a channel version that has no value (the channel was cleared)."""


@dataclass(frozen=True, slots=True)
class BlobRecord:
    """One channel's value at one version. ``data`` is ``None`` for an empty channel."""

    channel: str
    version: str
    type: str
    data: bytes | None


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    """Everything one ``put`` stores, written in a single transaction."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_id: str | None
    body: Typed
    metadata: Typed
    metadata_json: str | None
    """Plaintext JSON of the metadata for server-side filtering, or ``None`` when the serde
    encrypts (nothing readable may be stored then)."""
    run_key: str | None
    channel_versions: dict[str, str]
    blobs: list[BlobRecord]
    epoch: int | None = None
    """Fencing epoch of the lease the write was made under, or ``None`` (unfenced)."""


@dataclass(frozen=True, slots=True)
class WriteRecord:
    """One pending write of a task."""

    task_id: str
    idx: int
    channel: str
    type: str
    data: bytes
    task_path: str


@dataclass(slots=True)
class CheckpointRow:
    """A stored checkpoint with its channel blobs and pending writes, still serialized."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_id: str | None
    body: Typed
    metadata: Typed
    blobs: list[tuple[str, str, bytes]] = field(default_factory=list)
    """``(channel, type, data)`` for every non-empty channel the checkpoint references."""
    writes: list[WriteRecord] = field(default_factory=list)
    versions: dict[str, str] | None = None
    """The checkpoint's channel versions (as stored, text), for the cache tiers."""


@dataclass(slots=True)
class ChainLink:
    """One ancestor on a parent chain, as ``get_delta_channel_history`` needs it.

    ``seeds`` holds the non-empty stored values of the requested channels at this ancestor;
    ``writes`` its pending writes on the requested channels.
    """

    checkpoint_id: str
    seeds: dict[str, tuple[str, bytes]]
    writes: list[WriteRecord]


@dataclass(frozen=True, slots=True)
class ListQuery:
    """What ``list`` asks a store for. Rows come back newest first."""

    thread_id: str | None
    checkpoint_ns: str | None
    checkpoint_id: str | None
    before_id: str | None
    metadata_filter: dict[str, Any] | None


@dataclass(slots=True)
class WritesOp:
    """One ``put_writes`` call."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    writes: list[WriteRecord]
    epoch: int | None = None
    """Fencing epoch of the lease it was made under, or ``None`` (unfenced)."""


Op = CheckpointRecord | WritesOp


@dataclass(slots=True)
class Batch:
    """Writes flushed together: checkpoints and pending writes, in arrival order."""

    checkpoints: list[CheckpointRecord] = field(default_factory=list)
    writes: list[WritesOp] = field(default_factory=list)

    @classmethod
    def of(cls, op: Op) -> Batch:
        """A batch of one write."""
        batch = cls()
        batch.add(op)
        return batch

    def add(self, op: Op) -> None:
        if isinstance(op, WritesOp):
            self.writes.append(op)
        else:
            self.checkpoints.append(op)

    def __len__(self) -> int:
        return len(self.checkpoints) + len(self.writes)


@dataclass(slots=True)
class Stored:
    """What a batch really changed in the durable tier: the checkpoints it inserted (a repeated
    one was stored before) and the writes it inserted or, for special channels, replaced (a
    repeated regular write keeps its first value). Only these may be published to a cache."""

    checkpoints: set[tuple[str, str, str]] = field(default_factory=set)
    writes: set[tuple[str, str, str, str, int]] = field(default_factory=set)
    """``(thread, ns, checkpoint, task_id, idx)``."""


def is_special(idx: int) -> bool:
    """Whether a pending write at ``idx`` is on a special channel (error, interrupt, resume,
    scheduled: LangGraph gives those negative indexes). A regular write keeps the first value
    stored for its ``(task_id, idx)``; a special one overwrites. This is the one definition in
    Python; the same rule is written once per backend, where its statements are: the
    ``ON CONFLICT`` clause of durable/postgres/writes.py, the upsert of durable/sqlite/writes.py
    and WRITES_LUA in cache/scripts.py."""
    return idx < 0
