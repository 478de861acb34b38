"""The Postgres durable tier, on an asyncpg pool: the store the saver uses.

Every hot-path operation is a single statement, so it is its own transaction and costs one
round trip once asyncpg has prepared it. Table names carry the saver's prefix (``{p}`` in the
statements); every primary key starts with ``thread_id`` so the tables shard by thread (Citus)
without redesign. Text keys use the "C" collation so that the database orders ids exactly as
Python does.
"""

from __future__ import annotations

from langgraph_resilient.checkpoint.durable.postgres.leases import PostgresLeases
from langgraph_resilient.checkpoint.durable.postgres.maintenance import PostgresMaintenance
from langgraph_resilient.checkpoint.durable.postgres.reads import PostgresReads
from langgraph_resilient.checkpoint.durable.postgres.schema import PostgresSchema
from langgraph_resilient.checkpoint.durable.postgres.writes import PostgresWrites


class PostgresStore(
    PostgresWrites, PostgresReads, PostgresMaintenance, PostgresLeases, PostgresSchema
):
    """The durable tier on Postgres, created by ``ResilientSaver.from_urls(postgres_url=...)``.

    Implements :class:`~langgraph_resilient.checkpoint.durable.store.DurableStore`; each part
    of it (writes, reads, maintenance, leases, schema) is in the module of that name, with its
    statements.
    """
