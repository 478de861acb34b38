"""The embedded durable tier, one SQLite file with no server: the store the saver uses.

One connection lives on one dedicated thread, so every statement runs in order and the event
loop never blocks on disk. WAL mode lets other processes read while this one writes; writes
from several processes wait for each other (``busy_timeout``). Each operation runs in one
transaction (``BEGIN IMMEDIATE`` for writes, so a retry never sees half of it). The schema and
every rule are the Postgres store's (``durable/postgres/``), written for SQLite.
"""

from __future__ import annotations

from langgraph_resilient.checkpoint.durable.sqlite.leases import SqliteLeases
from langgraph_resilient.checkpoint.durable.sqlite.maintenance import SqliteMaintenance
from langgraph_resilient.checkpoint.durable.sqlite.reads import SqliteReads
from langgraph_resilient.checkpoint.durable.sqlite.schema import SqliteSchema
from langgraph_resilient.checkpoint.durable.sqlite.writes import SqliteWrites


class SqliteStore(SqliteWrites, SqliteReads, SqliteMaintenance, SqliteLeases, SqliteSchema):
    """The durable tier in one SQLite file (``ResilientSaver.from_urls(sqlite_path=...)``).

    Implements :class:`~langgraph_resilient.checkpoint.durable.store.DurableStore`; each part
    of it (writes, reads, maintenance, leases, schema) is in the module of that name.
    """
