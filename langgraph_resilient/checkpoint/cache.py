"""L1: the in-process cache of immutable entries (checkpoint records and channel values).

Bounded in bytes, least recently used out first. It never holds anything that can change (heads
and pending writes live in Redis and Postgres), so it needs no invalidation beyond its keys:
every key carries the thread's cache generation, which deletes and repairs bump.
All access happens on the saver's home event loop, so it needs no lock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

_ENTRY_OVERHEAD = 200
"""Rough bytes of bookkeeping per entry (key tuple, OrderedDict node), counted in the bound."""


class LocalCache:
    """A byte-bounded LRU map. ``max_bytes=0`` disables it."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used_bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> Any | None:
        """The value under ``key`` (refreshing its recency), or ``None``."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[0]

    def put(self, key: Hashable, value: Any, size: int) -> None:
        """Store ``value`` costing ``size`` bytes; evicts the least recently used to fit."""
        cost = size + _ENTRY_OVERHEAD
        if cost > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.used_bytes -= old[1]
        self._entries[key] = (value, cost)
        self.used_bytes += cost
        while self.used_bytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.used_bytes -= evicted

    def clear(self) -> None:
        """Drop everything."""
        self._entries.clear()
        self.used_bytes = 0
