"""Pruning a thread to its newest checkpoints without breaking ``DeltaChannel`` state.

The plan itself (which checkpoints may go) is pure and lives in :mod:`.history`; this runs it
against the durable tier and invalidates the thread's cached entries afterwards.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator
from datetime import timedelta

from langgraph.checkpoint.serde.base import SerializerProtocol

from langgraph_resilient.checkpoint import codec, history
from langgraph_resilient.checkpoint.durable.store import Skeleton
from langgraph_resilient.checkpoint.tiers import Tiers
from langgraph_resilient.checkpoint.writes import WritePath

PRUNE_STRATEGIES = ("keep_latest", "delete")
"""``aprune``'s strategies."""


async def keep_latest(
    tiers: Tiers, writes: WritePath, serde: SerializerProtocol, thread_id: str
) -> None:
    """Delete every checkpoint of the thread but each namespace's newest and the ancestors its
    delta channels need (in one transaction)."""
    store = tiers.store
    skeletons = await tiers.retrying("prune", lambda: store.skeletons(thread_id), write=False)
    if not skeletons:
        return

    def head_channels(head: Skeleton) -> set[str]:
        return history.delta_channels(codec.load(serde, head.metadata))

    heads: dict[str, Skeleton] = {}
    for sk in skeletons:
        best = heads.get(sk.checkpoint_ns)
        if best is None or sk.checkpoint_id > best.checkpoint_id:
            heads[sk.checkpoint_ns] = sk
    channels: set[str] = set()
    for head in heads.values():
        channels |= head_channels(head)
    seeded = (
        await tiers.retrying(
            "prune", lambda: store.seeded_versions(thread_id, sorted(channels)), write=False
        )
        if channels
        else set()
    )
    doomed = history.plan_keep_latest(skeletons, head_channels, seeded)
    if doomed:
        await writes.rewrite(
            "prune", lambda: store.delete_checkpoints(thread_id, doomed), [thread_id]
        )


async def idle_threads(
    tiers: Tiers, older_than: timedelta, batch_size: int
) -> AsyncIterator[list[str]]:
    """Batches of up to ``batch_size`` threads whose newest checkpoint is older than
    ``older_than``, in id order (each batch one bounded query, run on the saver's home loop).
    The caller prunes each batch before asking for the next."""
    cutoff = time.time() - older_than.total_seconds()
    after = ""
    store = tiers.store
    while True:
        batch = await tiers.bridge.hop(
            tiers.retrying(
                "retention",
                functools.partial(store.threads_older_than, cutoff, after, batch_size),
                write=False,
            )
        )
        if not batch:
            return
        yield batch
        after = batch[-1]
