"""Between LangGraph's objects and the saver's records, through the saver's ``serde``.

Every byte a tier stores is made here: checkpoints (their values apart, per channel version),
metadata and pending writes go through the serde the saver holds at the time of the call (a
shallow copy made by ``with_allowlist()`` serializes with its own allowlist), and come back the
same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from langgraph_resilient.checkpoint import codec
from langgraph_resilient.checkpoint.locator import Locator
from langgraph_resilient.checkpoint.records import (
    EMPTY_BLOB_TYPE,
    BlobRecord,
    CheckpointRecord,
    CheckpointRow,
    Typed,
    WriteRecord,
)
from langgraph_resilient.checkpoint.settings import SaverSettings
from langgraph_resilient.errors import ConfigurationError


def plaintext_metadata(serde: SerializerProtocol, settings: SaverSettings) -> bool:
    """Whether a plaintext JSON copy of metadata is stored (never when the serde encrypts,
    unless ``plaintext_metadata=True`` says so)."""
    flag = settings.plaintext_metadata
    return not codec.encrypts(serde) if flag is None else flag


def to_tuple(serde: SerializerProtocol, row: CheckpointRow) -> CheckpointTuple:
    """A stored row as the ``CheckpointTuple`` LangGraph expects (writes in its order)."""
    checkpoint: Checkpoint = codec.load(serde, row.body)
    checkpoint["channel_values"] = {
        channel: codec.load(serde, (typ, data)) for channel, typ, data in row.blobs
    }
    loc = Locator(row.thread_id, row.checkpoint_ns, row.checkpoint_id)
    writes = sorted(row.writes, key=lambda w: writes_sort_key(w.task_path, w.task_id, w.idx))
    return CheckpointTuple(
        config=loc.config(),
        checkpoint=checkpoint,
        metadata=codec.load(serde, row.metadata),
        parent_config=loc.config(row.parent_id) if row.parent_id else None,
        pending_writes=[
            (w.task_id, w.channel, codec.load(serde, (w.type, w.data))) for w in writes
        ],
    )


def checkpoint_record(
    serde: SerializerProtocol,
    settings: SaverSettings,
    config: RunnableConfig,
    checkpoint: Checkpoint,
    metadata: CheckpointMetadata,
    new_versions: ChannelVersions,
    epoch: Callable[[str], int | None],
) -> CheckpointRecord:
    """What ``put`` stores, serialized and checked: ``InvalidConfigError``,
    ``SerializationError`` or ``PayloadTooLargeError`` before anything is written. ``epoch``
    gives the fencing epoch of the lease this process holds on a thread, if any."""
    loc = Locator.of(config)
    if not isinstance(checkpoint, dict) or "id" not in checkpoint:
        raise ConfigurationError("checkpoint must be a LangGraph Checkpoint dict with an id")
    values = checkpoint.get("channel_values", {})
    body = {k: v for k, v in checkpoint.items() if k != "channel_values"}
    meta = get_serializable_checkpoint_metadata(config, metadata)
    serialized = {
        channel: codec.dump(serde, values[channel], f"channel {channel!r}")
        for channel in new_versions
        if channel in values
    }
    body_typed = codec.dump(serde, body, "checkpoint")
    meta_typed = codec.dump(serde, meta, "checkpoint metadata")
    size = len(body_typed[1]) + len(meta_typed[1]) + sum(len(t[1]) for t in serialized.values())
    codec.check_size(size, settings.max_payload_bytes, f"checkpoint {checkpoint['id']}")
    blobs = []
    for channel, version in new_versions.items():
        typed = serialized.get(channel)
        if typed is None:
            blobs.append(BlobRecord(channel, str(version), EMPTY_BLOB_TYPE, None))
        else:
            blobs.append(BlobRecord(channel, str(version), *settings.compress(typed)))
    body_typed = settings.compress(body_typed)
    return CheckpointRecord(
        thread_id=loc.thread_id,
        checkpoint_ns=loc.checkpoint_ns,
        checkpoint_id=str(checkpoint["id"]),
        parent_id=loc.checkpoint_id,
        body=body_typed,
        metadata=meta_typed,
        metadata_json=codec.metadata_json(dict(meta))
        if plaintext_metadata(serde, settings)
        else None,
        run_key=codec.run_key(meta.get("run_id")),
        channel_versions={k: str(v) for k, v in checkpoint["channel_versions"].items()},
        blobs=blobs,
        epoch=epoch(loc.thread_id),
    )


def write_records(
    serde: SerializerProtocol,
    settings: SaverSettings,
    writes: Sequence[tuple[str, Any]],
    task_id: str,
    task_path: str,
) -> list[WriteRecord]:
    """What ``put_writes`` stores, serialized and checked. One record per ``(task_id, idx)``:
    a repeated special channel keeps its last value, as a second ``put_writes`` would."""
    by_idx: dict[int, tuple[str, Typed]] = {}
    for idx, (channel, value) in enumerate(writes):
        by_idx[WRITES_IDX_MAP.get(channel, idx)] = (
            channel,
            codec.dump(serde, value, f"write to {channel!r}"),
        )
    size = sum(len(typed[1]) for _, typed in by_idx.values())
    codec.check_size(size, settings.max_payload_bytes, f"writes of task {task_id}")
    return [
        WriteRecord(str(task_id), key, channel, *settings.compress(typed), task_path)
        for key, (channel, typed) in by_idx.items()
    ]
