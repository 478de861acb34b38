"""Optional zstd compression of stored values, on every tier.

With ``compression="zstd"``, every serialized value of at least ``compression_min_bytes`` (a
channel value, a checkpoint body, a pending write) is compressed before it is stored, and its
type tag is marked ``zstd:`` (``msgpack`` becomes ``zstd:msgpack``). Postgres or SQLite, Redis
and the in-process cache all hold the compressed form; it is decompressed when read. Reading
does not depend on the setting: a value written compressed is read back by a saver with
compression off, and the other way round, so the setting can be changed at any time.

A value that does not get at least 10 % smaller is stored as it was, and so is one the serde
encrypted (its type tag has a ``+cipher`` suffix, LangGraph's ``EncryptedSerializer``
convention): ciphertext does not compress.
"""

from __future__ import annotations

import threading

import zstandard

from langgraph_resilient.checkpoint.records import EMPTY_BLOB_TYPE, Typed
from langgraph_resilient.errors import ConfigurationError, SerializationError

MARK = "zstd:"
"""Leads the type tag of a compressed value."""

COMPRESSIONS = (None, "zstd")
"""The values the ``compression`` setting accepts."""

_LEVEL = 3  # zstd's default: ~30 us per 36 KB here, a fraction of one commit

_local = threading.local()  # zstd (de)compressors are not thread-safe; one per thread


def check(compression: str | None, min_bytes: int) -> None:
    """Validate the settings (``ConfigurationError`` naming the setting)."""
    if compression not in COMPRESSIONS:
        raise ConfigurationError(f"compression must be 'zstd' or None (off), got {compression!r}")
    if isinstance(min_bytes, bool) or not isinstance(min_bytes, int) or min_bytes < 0:
        raise ConfigurationError(
            f"compression_min_bytes must be an integer >= 0, got {min_bytes!r}"
        )


def compress(typed: Typed, min_bytes: int) -> Typed:
    """``typed`` compressed, when that is worth it (see the module's docstring)."""
    typ, data = typed
    if len(data) < min_bytes or "+" in typ or typ == EMPTY_BLOB_TYPE or typ.startswith(MARK):
        return typed
    packed = _compressor().compress(data)
    if len(packed) > len(data) * 0.9:
        return typed
    return MARK + typ, packed


def decompress(typed: Typed) -> Typed:
    """A stored value as the serde wrote it (``typed`` itself when it is not compressed)."""
    typ, data = typed
    if not typ.startswith(MARK):
        return typed
    try:
        return typ[len(MARK) :], _decompressor().decompress(data)
    except zstandard.ZstdError as exc:
        raise SerializationError(f"a stored {typ} value does not decompress: {exc}") from exc


def _compressor() -> zstandard.ZstdCompressor:
    found: zstandard.ZstdCompressor | None = getattr(_local, "compressor", None)
    if found is None:
        found = _local.compressor = zstandard.ZstdCompressor(level=_LEVEL)
    return found


def _decompressor() -> zstandard.ZstdDecompressor:
    found: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if found is None:
        found = _local.decompressor = zstandard.ZstdDecompressor()
    return found
