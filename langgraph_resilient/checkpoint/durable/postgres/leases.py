"""The Postgres durable tier, on an asyncpg pool: the fallback thread lease.

Every hot-path operation is a single statement, so it is its own transaction and costs one
round trip once asyncpg has prepared it. Table names carry the saver's prefix (``{p}`` in the
statements); every primary key starts with ``thread_id`` so the tables shard by thread (Citus)
without redesign. Text keys use the "C" collation so that the database orders ids exactly as
Python does.
"""

from __future__ import annotations

from langgraph_resilient.checkpoint.durable.postgres.connection import PostgresConnection
from langgraph_resilient.checkpoint.durable.store import EpochRaise
from langgraph_resilient.checkpoint.fencing import EPOCH_BAND

# The fallback thread lease (used when Redis is down or not configured) lives in the
# `threads` row that also holds the fencing epoch: `lease_token` and `lease_expires_at`.
# Expiry is judged by the database's own clock, so replicas' clocks never matter. Each
# statement is one round trip and its own transaction; the row lock taken by ON CONFLICT DO
# UPDATE serializes it with the fenced writes of the same thread. See docs/lease.md.

# Take the lease if the row is free or expired, raising the epoch in the same statement:
# +1 inside an even (durable-store) band, else to the first epoch of the next even band, so
# the new epoch is above every epoch Redis handed out (store.fallback_epoch, in SQL).
# Returns the new epoch; no row while another token holds a live lease.
LEASE_ACQUIRE_SQL = """
INSERT INTO {p}threads AS t (thread_id, epoch, lease_token, lease_expires_at)
VALUES ($1, 1, $2, clock_timestamp() + make_interval(secs => $3))
ON CONFLICT (thread_id) DO UPDATE
SET epoch = CASE WHEN (t.epoch / $4::bigint) % 2 = 0 THEN t.epoch + 1
                 ELSE (t.epoch / $4::bigint + 1) * $4::bigint + 1 END,
    lease_token = EXCLUDED.lease_token, lease_expires_at = EXCLUDED.lease_expires_at,
    updated_at = now()
WHERE t.lease_token IS NULL OR t.lease_expires_at IS NULL
    OR t.lease_expires_at <= clock_timestamp()
RETURNING t.epoch
"""
# Renew the lease for a token at its epoch, or take the row for a lease that moves here
# from Redis (same epoch): only if no other token holds a live lease and no newer epoch was
# stored (a newer epoch means the lease was taken over: the caller marks it lost).
LEASE_HOLD_SQL = """
INSERT INTO {p}threads AS t (thread_id, epoch, lease_token, lease_expires_at)
VALUES ($1, $3, $2, clock_timestamp() + make_interval(secs => $4))
ON CONFLICT (thread_id) DO UPDATE
SET epoch = EXCLUDED.epoch, lease_token = EXCLUDED.lease_token,
    lease_expires_at = EXCLUDED.lease_expires_at, updated_at = now()
WHERE t.epoch <= EXCLUDED.epoch
    AND (t.lease_token IS NULL OR t.lease_token = EXCLUDED.lease_token
         OR t.lease_expires_at IS NULL OR t.lease_expires_at <= clock_timestamp())
RETURNING 1
"""
# Compare-and-delete: only the holder's own token clears the row's lease.
LEASE_RELEASE_SQL = """
UPDATE {p}threads SET lease_token = NULL, lease_expires_at = NULL, updated_at = now()
WHERE thread_id = $1 AND lease_token = $2
"""
# Confirm a Redis epoch band: raise the stored epoch to the band's first number ($2) if it is
# lower and no other token holds a live lease row. `raised` is decided under the row lock;
# `held` and `epoch` (a snapshot) only tell the caller why nothing was raised.
LEASE_RAISE_SQL = """
WITH cur AS (
    SELECT epoch, lease_token IS NOT NULL AND lease_token <> $3
        AND lease_expires_at > clock_timestamp() AS held
    FROM {p}threads WHERE thread_id = $1
), raised AS (
    INSERT INTO {p}threads AS t (thread_id, epoch) VALUES ($1, $2)
    ON CONFLICT (thread_id) DO UPDATE SET epoch = EXCLUDED.epoch, updated_at = now()
    WHERE t.epoch < EXCLUDED.epoch
        AND (t.lease_token IS NULL OR t.lease_token = $3
             OR t.lease_expires_at IS NULL OR t.lease_expires_at <= clock_timestamp())
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM raised) AS raised,
    coalesce((SELECT held FROM cur), false) AS held,
    coalesce((SELECT epoch FROM cur), 0) AS epoch
"""
THREAD_EPOCH_SQL = "SELECT epoch FROM {p}threads WHERE thread_id = $1"


class PostgresLeases(PostgresConnection):
    """The lease row of a thread (see docs/lease.md): used when Redis is down or absent."""

    async def lease_acquire(self, thread_id: str, token: str, ttl_s: float) -> int | None:
        epoch = await self._pool().fetchval(
            self._sql(LEASE_ACQUIRE_SQL), thread_id, token, float(ttl_s), EPOCH_BAND
        )
        return None if epoch is None else int(epoch)

    async def lease_hold(self, thread_id: str, token: str, epoch: int, ttl_s: float) -> bool:
        held = await self._pool().fetchval(
            self._sql(LEASE_HOLD_SQL), thread_id, token, epoch, float(ttl_s)
        )
        return held is not None

    async def lease_release(self, thread_id: str, token: str) -> None:
        await self._pool().execute(self._sql(LEASE_RELEASE_SQL), thread_id, token)

    async def lease_raise(self, thread_id: str, floor: int, token: str) -> EpochRaise:
        row = await self._pool().fetchrow(self._sql(LEASE_RAISE_SQL), thread_id, floor, token)
        return EpochRaise(bool(row["raised"]), bool(row["held"]), int(row["epoch"]))

    async def thread_epoch(self, thread_id: str) -> int:
        epoch = await self._pool().fetchval(self._sql(THREAD_EPOCH_SQL), thread_id)
        return int(epoch or 0)
