"""Validated settings of a ``ResilientSaver`` (what ``from_urls`` and ``doctor`` work from)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from langgraph_resilient._urls import redact, split_url, url_hosts
from langgraph_resilient.checkpoint import compression
from langgraph_resilient.checkpoint.records import Typed
from langgraph_resilient.errors import ConfigurationError

DEFAULT_SQLITE_PATH = "langgraph_state.db"
"""Embedded default file, relative to the working directory; overridden by the
``LANGGRAPH_RESILIENT_SQLITE_PATH`` environment variable."""

POSTGRES_URL_EXAMPLE = "postgresql://user:password@host:5432/dbname?sslmode=require"

_PREFIX_RE = re.compile(r"^[a-z_][a-z0-9_]{0,30}$")


def default_sqlite_path() -> str:
    """The file ``from_urls()`` uses when given no URL at all."""
    return os.environ.get("LANGGRAPH_RESILIENT_SQLITE_PATH", DEFAULT_SQLITE_PATH)


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    """Connection pool settings of the Postgres tier (asyncpg)."""

    url: str
    min_size: int = 1
    max_size: int = 10
    connect_timeout_s: float = 5.0
    command_timeout_s: float = 30.0
    pgbouncer: bool = False
    """Behind pgbouncer in transaction mode: no server-side prepared statements are kept."""
    max_inactive_connection_lifetime_s: float = 300.0

    def __post_init__(self) -> None:
        parts = split_url(self.url, "postgres_url", POSTGRES_URL_EXAMPLE)
        if parts.scheme not in ("postgres", "postgresql"):
            raise ConfigurationError(
                f"postgres_url must start with postgresql:// (got {redact(self.url)!r}), "
                f"for example {POSTGRES_URL_EXAMPLE}"
            )
        url_hosts(parts, 5432, "postgres_url", POSTGRES_URL_EXAMPLE)
        if not 0 <= self.min_size <= self.max_size or self.max_size < 1:
            raise ConfigurationError(
                f"pool sizes must satisfy 0 <= pool_min_size <= pool_max_size and "
                f"pool_max_size >= 1 (got {self.min_size}, {self.max_size})"
            )
        for name in ("connect_timeout_s", "command_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be > 0")


SQLITE_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


@dataclass(frozen=True, slots=True)
class SqliteSettings:
    """The embedded durable tier: one SQLite file."""

    path: str = DEFAULT_SQLITE_PATH
    synchronous: str = "FULL"
    """``PRAGMA synchronous``: ``FULL`` survives power loss, ``NORMAL`` only process crashes."""
    busy_timeout_s: float = 30.0
    """How long a write waits for another process's write lock before it fails."""

    def __post_init__(self) -> None:
        if not self.path.strip():
            raise ConfigurationError(
                "sqlite_path is empty: give a file path such as state.db, or leave it unset "
                "for the default"
            )
        if self.synchronous.upper() not in SQLITE_SYNCHRONOUS:
            raise ConfigurationError(f"sqlite_synchronous must be one of {SQLITE_SYNCHRONOUS}")
        if self.busy_timeout_s <= 0:
            raise ConfigurationError("command_timeout_s (the SQLite busy timeout) must be > 0")


@dataclass(frozen=True, slots=True)
class SaverSettings:
    """Behaviour of the saver that does not depend on the backend."""

    prefix: str = "lgr_"
    """Prefix of every table (and Redis key): lets several apps share one database."""
    max_payload_bytes: int = 32 * 1024 * 1024
    """Largest serialized ``put`` or ``put_writes`` accepted; larger ones raise
    ``PayloadTooLargeError`` and write nothing."""
    write_attempts: int = 3
    """Attempts of a call to the durable store on connection failures (reads and writes
    alike) before ``DurableWriteError`` (a write) or ``TierUnavailableError`` (a read)."""
    write_retry_deadline_s: float = 10.0
    """No retry of a store call starts after this many seconds since its first attempt."""
    migrate_on_enter: bool = True
    """Apply schema migrations when the saver is entered (else only check the version)."""
    plaintext_metadata: bool | None = None
    """Store a plaintext JSON copy of metadata for server-side ``list(filter=...)``.
    ``None``: yes unless the serde is an ``EncryptedSerializer``."""
    list_page_size: int = 100
    """Rows ``list`` fetches per query (pages are fetched lazily)."""
    cache_max_bytes: int = 64 * 1024 * 1024
    """Bound of the in-process cache in front of Redis (used with a Redis tier)."""
    redis_required: bool = False
    """Fail on enter when Redis cannot be reached (default: start without it and use it once
    it answers)."""
    compression: str | None = None
    """``"zstd"``: compress stored values of at least ``compression_min_bytes`` on every tier
    (see :mod:`~langgraph_resilient.checkpoint.compression`); ``None``: off."""
    compression_min_bytes: int = 1024
    """Smallest serialized value worth compressing."""

    def __post_init__(self) -> None:
        if not _PREFIX_RE.match(self.prefix):
            raise ConfigurationError(
                f"prefix must be lowercase letters, digits and '_' (at most 31, not starting "
                f"with a digit), got {self.prefix!r}"
            )
        if self.max_payload_bytes < 1024:
            raise ConfigurationError("max_payload_bytes must be at least 1024")
        if self.write_attempts < 1:
            raise ConfigurationError("write_attempts must be >= 1")
        if self.list_page_size < 1:
            raise ConfigurationError("list_page_size must be >= 1")
        if self.cache_max_bytes < 0:
            raise ConfigurationError("cache_max_bytes must be >= 0 (0 disables the cache)")
        compression.check(self.compression, self.compression_min_bytes)

    def compress(self, typed: Typed) -> Typed:
        """A serialized value as it is stored (compressed when the settings say so)."""
        if self.compression is None:
            return typed
        return compression.compress(typed, self.compression_min_bytes)
