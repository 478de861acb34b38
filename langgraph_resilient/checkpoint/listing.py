"""History listings the Redis tier serves: the first page of a listing of one thread and
namespace, newest first, without a metadata filter (what ``get_state_history(config,
limit=...)`` asks). Later pages, and every other listing, come from the durable tier."""

from __future__ import annotations

from langgraph_resilient.checkpoint.fenced import FencedWrites
from langgraph_resilient.checkpoint.records import CheckpointRow, ListQuery
from langgraph_resilient.checkpoint.tiers import Tiers
from langgraph_resilient.observability import metrics


def servable(tiers: Tiers, query: ListQuery) -> bool:
    """Whether the first page of a listing may come from the Redis tier."""
    if tiers.redis is None or query.metadata_filter:
        return False
    return (
        query.thread_id is not None
        and query.checkpoint_ns is not None
        and query.checkpoint_id is None
    )


async def history_page(
    tiers: Tiers, fenced: FencedWrites, query: ListQuery, limit: int
) -> list[CheckpointRow]:
    """The listing from Redis in one round trip when it holds it; else from the durable tier,
    then cached. A lease holder lists what it wrote from the durable tier (Redis has not seen
    it yet)."""
    tier = tiers.redis
    assert query.thread_id is not None and query.checkpoint_ns is not None
    tid, ns, before = query.thread_id, query.checkpoint_ns, query.before_id
    held = fenced.deferred_of(tid)
    lookup = None
    if tier is not None and (held is None or not held.touched(ns)):
        token = "" if held is None else held.token
        lookup = await tier.history(tid, ns, before, limit, own_token=token)
        if lookup.rows is not None:
            metrics.CHECKPOINT_CACHE_READS.labels("hit").inc()
            return lookup.rows
    metrics.CHECKPOINT_CACHE_READS.labels("miss").inc()
    store = tiers.store
    rows = await tiers.retrying("list", lambda: store.list_page(query, None, limit), write=False)
    if tier is not None and lookup is not None:
        await tier.fill_history(tid, ns, rows, lookup, before, limit)
    return rows
