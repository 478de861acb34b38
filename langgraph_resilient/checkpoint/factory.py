"""From ``ResilientSaver.from_urls``'s arguments to what a saver is built of.

URLs and keyword arguments become validated settings objects (:mod:`.settings`,
``RedisSettings``); given settings objects are used as they are. Either way each setting is
checked before anything connects, and a contradiction (two durable tiers, a URL and a settings
object for the same tier) is a :class:`ConfigurationError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from langgraph_resilient._redis.client import RedisSettings
from langgraph_resilient.checkpoint.durable.store import DurableStore
from langgraph_resilient.checkpoint.settings import (
    PostgresSettings,
    SaverSettings,
    SqliteSettings,
    default_sqlite_path,
)
from langgraph_resilient.errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class Parts:
    """The durable store (not yet open) and the settings of a saver."""

    store: DurableStore
    settings: SaverSettings
    redis: RedisSettings | None


def resolve(
    *,
    postgres: PostgresSettings | None,
    sqlite: SqliteSettings | None,
    redis: RedisSettings | None,
    settings: SaverSettings,
) -> Parts:
    """The store for the chosen durable tier (SQLite when no Postgres is given)."""
    if postgres is not None and sqlite is not None:
        raise ConfigurationError(
            "give either postgres_url or sqlite_path, not both: the durable tier is one database"
        )
    store: DurableStore
    if postgres is not None:
        from langgraph_resilient.checkpoint.durable.postgres import PostgresStore

        store = PostgresStore(postgres, prefix=settings.prefix)
    else:
        from langgraph_resilient.checkpoint.durable.sqlite import SqliteStore

        store = SqliteStore(sqlite or SqliteSettings(default_sqlite_path()), prefix=settings.prefix)
    return Parts(store, settings, redis)


def one_of(name: str, url: str | None, given: object | None) -> None:
    """Refuse a URL and a settings object for the same tier."""
    if url is not None and given is not None:
        raise ConfigurationError(
            f"give {name}_url or {name}=..., not both: the settings object already names the server"
        )
