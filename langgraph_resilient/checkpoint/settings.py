"""Validated settings of a ``ResilientSaver`` (what ``from_urls`` and ``doctor`` work from)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

from langgraph_resilient.errors import ConfigurationError

DEFAULT_SQLITE_PATH = "langgraph_state.db"
"""Embedded default file, relative to the working directory; overridden by the
``LANGGRAPH_RESILIENT_SQLITE_PATH`` environment variable."""

POSTGRES_URL_EXAMPLE = "postgresql://user:password@host:5432/dbname?sslmode=require"

_PREFIX_RE = re.compile(r"^[a-z_][a-z0-9_]{0,30}$")


def default_sqlite_path() -> str:
    """The file ``from_urls()`` uses when given no URL at all."""
    return os.environ.get("LANGGRAPH_RESILIENT_SQLITE_PATH", DEFAULT_SQLITE_PATH)


def redact(url: str) -> str:
    """``url`` with its password replaced, safe for errors and logs (even when malformed)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, hostpart = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user}:***@{hostpart}" if colon else url


def split_url(url: str, setting: str, example: str) -> SplitResult:
    """``url`` parsed, or a :class:`ConfigurationError` that names ``setting``, shows the URL
    with its password masked and gives a correct ``example``."""
    if not url.strip():
        raise ConfigurationError(
            f"{setting} is empty: give a URL such as {example}, or leave {setting} unset"
        )
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL": an unclosed [
        raise ConfigurationError(
            f"{setting} {redact(url)!r} is malformed ({exc}); for example {example}"
        ) from None
    return parts


def url_hosts(
    parts: SplitResult, default_port: int, setting: str, example: str
) -> list[tuple[str, int]]:
    """The ``host:port`` list of a URL's network location (one, or several separated by
    commas as Sentinel, Cluster and multi-host Postgres URLs allow); IPv6 hosts in brackets."""
    url = urlunsplit(parts)
    hosts = []
    for item in parts.netloc.rpartition("@")[2].split(","):
        host, port_text = item, ""
        if item.startswith("["):
            host, bracket, after = item[1:].partition("]")
            if not bracket or (after and not after.startswith(":")):
                raise ConfigurationError(
                    f"{setting} {redact(url)!r}: the IPv6 host {item!r} needs its closing "
                    f"bracket, as in [::1]:{default_port}; for example {example}"
                )
            port_text = after[1:]
        elif ":" in item:
            host, _, port_text = item.rpartition(":")
        if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
            raise ConfigurationError(
                f"{setting} {redact(url)!r}: port {port_text!r} of host {host!r} is not a number "
                f"between 1 and 65535; for example {example}"
            )
        hosts.append((host or "127.0.0.1", int(port_text or default_port)))
    return hosts


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


@dataclass(frozen=True, slots=True)
class SaverSettings:
    """Behaviour of the saver that does not depend on the backend."""

    prefix: str = "lgr_"
    """Prefix of every table (and Redis key): lets several apps share one database."""
    max_payload_bytes: int = 32 * 1024 * 1024
    """Largest serialized ``put`` or ``put_writes`` accepted; larger ones raise
    ``PayloadTooLargeError`` and write nothing."""
    write_attempts: int = 3
    """Attempts of a durable write on connection failures before ``DurableWriteError``."""
    write_retry_deadline_s: float = 10.0
    """No write retry starts after this many seconds since the first attempt."""
    migrate_on_enter: bool = True
    """Apply schema migrations when the saver is entered (else only check the version)."""
    plaintext_metadata: bool | None = None
    """Store a plaintext JSON copy of metadata for server-side ``list(filter=...)``.
    ``None``: yes unless the serde is an ``EncryptedSerializer``."""
    list_page_size: int = 100

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
