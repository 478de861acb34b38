"""Pure logic over a thread's history: delta-channel replay and delta-safe pruning.

Both backends feed these functions, so the rules that LangGraph's ``DeltaChannel`` depends on
live in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from langgraph.checkpoint.base import DeltaChannelHistory, PendingWrite, writes_sort_key

from langgraph_resilient.checkpoint.durable.store import Skeleton
from langgraph_resilient.checkpoint.records import ChainLink, Typed

Decode = Callable[[Typed], Any]


def assemble_delta_history(
    links: Sequence[ChainLink], channels: Sequence[str], decode: Decode
) -> dict[str, DeltaChannelHistory]:
    """Fold ancestors (parent first) into per-channel writes (oldest first) and seeds.

    A channel's walk ends at the nearest ancestor holding a stored value for it; that
    ancestor's own writes still count, because they produced its child on the path.
    """
    collected: dict[str, list[PendingWrite]] = {ch: [] for ch in channels}
    seeds: dict[str, Any] = {}
    remaining = set(channels)
    for link in links:
        if not remaining:
            break
        ordered = sorted(link.writes, key=lambda w: writes_sort_key(w.task_path, w.task_id, w.idx))
        for w in reversed(ordered):
            if w.channel in remaining:
                collected[w.channel].append((w.task_id, w.channel, decode((w.type, w.data))))
        for ch, typed in link.seeds.items():
            if ch in remaining:
                seeds[ch] = decode(typed)
                remaining.discard(ch)
    result: dict[str, DeltaChannelHistory] = {}
    for ch in channels:
        entry: DeltaChannelHistory = {"writes": list(reversed(collected[ch]))}
        if ch in seeds:
            entry["seed"] = seeds[ch]
        result[ch] = entry
    return result


def delta_channels(metadata: Mapping[str, Any]) -> set[str]:
    """Channels a checkpoint tracks as ``DeltaChannel`` (from its snapshot counters)."""
    counters = metadata.get("counters_since_delta_snapshot") or {}
    return set(counters) if isinstance(counters, Mapping) else set()


def plan_keep_latest(
    skeletons: Iterable[Skeleton],
    head_delta_channels: Callable[[Skeleton], set[str]],
    seeded: set[tuple[str, str, str]],
) -> dict[str, list[str]]:
    """Checkpoints ``keep_latest`` may delete, by namespace.

    Keeps each namespace's newest checkpoint and, when it tracks delta channels, every
    ancestor back to the nearest one holding a stored value (a seed) for each of them, so
    delta channels still rebuild after the prune.
    """
    by_ns: dict[str, dict[str, Skeleton]] = {}
    for sk in skeletons:
        by_ns.setdefault(sk.checkpoint_ns, {})[sk.checkpoint_id] = sk
    doomed: dict[str, list[str]] = {}
    for ns, rows in by_ns.items():
        head = rows[max(rows)]
        keep: set[str] = set()
        remaining = head_delta_channels(head)
        cursor: Skeleton | None = head
        while cursor is not None:
            keep.add(cursor.checkpoint_id)
            remaining = {
                ch
                for ch in remaining
                if (ns, ch, cursor.channel_versions.get(ch, "")) not in seeded
            }
            if not remaining:
                break
            cursor = rows.get(cursor.parent_id) if cursor.parent_id else None
        drop = sorted(cid for cid in rows if cid not in keep)
        if drop:
            doomed[ns] = drop
    return doomed
