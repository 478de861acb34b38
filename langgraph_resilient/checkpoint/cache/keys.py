"""The keys of the saver's L1 cache (one type per kind of entry).

Kinds differ in arity, so two keys of different kinds are never equal (they are tuples).
Records and values are immutable and carry the generation they were read at: a generation bump
(a delete, a prune, a repair) makes them unreachable. Heads and generations are what this
replica last saw: hints that save bytes on the next Redis read, never trusted on their own.
"""

from __future__ import annotations

from typing import NamedTuple


class GenerationKey(NamedTuple):
    """The thread's cache generation as this replica last saw it."""

    thread_id: str


class HeadKey(NamedTuple):
    """The newest checkpoint id of a namespace as this replica last saw it."""

    thread_id: str
    checkpoint_ns: str


class RecordKey(NamedTuple):
    """A checkpoint record (body, metadata, parent, channel versions)."""

    thread_id: str
    generation: str
    checkpoint_ns: str
    checkpoint_id: str


class ValueKey(NamedTuple):
    """A channel value at one version."""

    thread_id: str
    generation: str
    checkpoint_ns: str
    channel: str
    version: str


class HistoryKey(NamedTuple):
    """The ids a history listing of a namespace returned last (a hint: which records to skip
    asking Redis for). Three fields, so that it never equals a ``HeadKey``."""

    thread_id: str
    checkpoint_ns: str
    kind: str = "history"
