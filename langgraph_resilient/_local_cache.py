"""``LocalCache``: an in-process map bounded in bytes, least recently used out first.

The saver's L1 (checkpoint records, channel values, and the heads and generations it validates
against Redis on every read) and the node cache's first level both use it. It knows nothing of
what it holds: callers choose keys that make a stale entry unreachable (the saver's carry the
thread's cache generation, see ``checkpoint/cache/keys.py``). Every access happens on one event
loop, so it needs no lock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

ENTRY_OVERHEAD = 200
"""Rough bytes of bookkeeping per entry (key, ``OrderedDict`` node), counted in the bound."""


class LocalCache:
    """A byte-bounded LRU map. ``max_bytes=0`` disables it (nothing is kept)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used_bytes = 0
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> Any | None:
        """The value under ``key`` (refreshing its recency), or ``None``."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: Hashable, value: Any, size: int) -> None:
        """Store ``value`` costing ``size`` bytes; evicts the least recently used to fit. A
        value too large for the whole bound is not kept (and any older value under ``key`` is
        dropped, so a reader never sees it)."""
        cost = size + ENTRY_OVERHEAD
        old = self._entries.pop(key, None)
        if old is not None:
            self.used_bytes -= old[1]
        if cost > self.max_bytes:
            return
        self._entries[key] = (value, cost)
        self.used_bytes += cost
        while self.used_bytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.used_bytes -= evicted

    def clear(self) -> None:
        """Drop everything."""
        self._entries.clear()
        self.used_bytes = 0
