"""The Postgres durable tier (asyncpg): ``PostgresStore``, one module per concern."""

from langgraph_resilient.checkpoint.durable.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
