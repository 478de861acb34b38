"""``Tiers``: what one saver is made of, handed to the parts that need it.

The durable store is the source of truth (L3); while the saver is open with a ``redis_url`` its
Redis tier (L2, with the in-process L1 it validates) sits in front of it. The write path, the
fenced writes and the thread lease all take a ``Tiers`` rather than the saver, so none of them
reaches into the saver, and the saver's own module holds only LangGraph's API.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from langgraph_resilient._bridge import LoopBridge
from langgraph_resilient._redis.client import RedisSettings
from langgraph_resilient.checkpoint.cache.redis_tier import RedisTier, open_redis_tier
from langgraph_resilient.checkpoint.durable.retrying import Retrying
from langgraph_resilient.checkpoint.durable.schema import check_version
from langgraph_resilient.checkpoint.durable.store import DurableStore
from langgraph_resilient.checkpoint.lease.holders import LocalLeases
from langgraph_resilient.checkpoint.settings import SaverSettings


@dataclass(slots=True)
class Tiers:
    """The store, the retrying calls to it, the home loop, and (while open) the Redis tier
    and the leases this process holds."""

    store: DurableStore
    retrying: Retrying
    bridge: LoopBridge
    prefix: str
    """Prefix of every table and Redis key."""
    redis: RedisTier | None = None
    """The Redis tier while the saver is open with a ``redis_url`` (else ``None``)."""
    leases: LocalLeases = field(default_factory=LocalLeases)
    """In-process lease state of the current home loop (renewed at every open)."""

    async def open(self, settings: SaverSettings, redis: RedisSettings | None) -> None:
        """Open the store (migrating it, or checking its schema), then the Redis tier."""
        self.leases = LocalLeases()
        store = self.store
        await store.open()
        try:
            if settings.migrate_on_enter:
                await self.retrying("migrate", store.migrate, write=False)
            else:
                found = await self.retrying("schema_version", store.schema_version, write=False)
                check_version(store.tier_name, found)
            if redis is not None:
                self.redis = await open_redis_tier(
                    redis,
                    prefix=settings.prefix,
                    store=store,
                    cache_max_bytes=settings.cache_max_bytes,
                    required=settings.redis_required,
                )
        except BaseException:
            await store.close()
            raise

    async def close(self) -> None:
        """Release what is still held, stop every background task and close the tiers. Each
        step is bounded in time, so closing never hangs whatever a server does."""
        try:
            await self.leases.release_all("the saver was closed while the lease was held")
        finally:
            tier, self.redis = self.redis, None
            try:
                if tier is not None:
                    await tier.close()
            finally:
                await self.store.close()
