"""How the Redis tier's values are laid out and read back, and how a foreign or damaged one is
recognised (:class:`CorruptEntry`: dropped, and the read goes to the durable tier)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ormsgpack

from langgraph_resilient.checkpoint.records import WriteRecord

MAGIC = b"LGR1"
"""Leads every value this tier writes: anything else under our keys is foreign or corrupt."""


class CorruptEntry(Exception):
    """A value under our keys does not decode: foreign or damaged."""


@dataclass(slots=True)
class CachedRecord:
    """An immutable checkpoint record as L1 keeps it."""

    parent_id: str | None
    body: tuple[str, bytes]
    metadata: tuple[str, bytes]
    versions: dict[str, str]


def pack(value: Any) -> bytes:
    """A value as the tier stores it: the magic, then msgpack (of already-serialized bytes:
    the saver's serde made them, so this layer never sees user objects)."""
    return MAGIC + ormsgpack.packb(value)


def unpack(data: Any) -> Any:
    """What :func:`pack` stored; :class:`CorruptEntry` for anything else."""
    if not isinstance(data, bytes) or not data.startswith(MAGIC):
        raise CorruptEntry("missing magic")
    try:
        return ormsgpack.unpackb(data[len(MAGIC) :])
    except Exception as exc:
        raise CorruptEntry(str(exc)) from exc


def write_field(w: WriteRecord) -> bytes:
    """A pending write's field in its checkpoint's writes hash: ``task_id``, ``idx``."""
    return f"{w.task_id}\x1f{w.idx}".encode()


def write_value(w: WriteRecord) -> bytes:
    """A pending write as the writes hash holds it."""
    return pack([w.task_id, w.idx, w.channel, w.type, w.data, w.task_path])


def decode_writes(flat: Sequence[Any]) -> tuple[bool, list[WriteRecord]]:
    """A writes hash (``HGETALL``'s flat reply): whether it is complete (the ``_`` field, and
    no ``!``: a special write was published there, maybe out of order), and its writes."""
    complete = False
    writes = []
    for name, value in zip(flat[::2], flat[1::2], strict=True):
        if name == b"_":
            complete = True
            continue
        if name == b"!":
            return False, []
        task_id, idx, channel, typ, data, path = unpack(value)
        writes.append(WriteRecord(task_id, int(idx), channel, typ, data, path))
    return complete, writes


def decode_record(raw_record: Any, raw_versions: Any) -> CachedRecord:
    """A checkpoint record as the tier stores it (the packed record and its versions' JSON)."""
    parent, body_type, body, meta_type, meta = unpack(raw_record)
    try:
        versions = json.loads(raw_versions)
    except ValueError as exc:
        raise CorruptEntry("channel versions") from exc
    return CachedRecord(parent, (body_type, body), (meta_type, meta), versions)
