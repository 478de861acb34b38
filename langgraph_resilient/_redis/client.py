"""Redis connections from a URL: plain, TLS, Sentinel and Cluster (redis-py's asyncio client).

Accepted URLs:

- ``redis://[user:password@]host:6379/0`` and ``rediss://...`` (TLS);
- ``redis+sentinel://[password@]host:26379[,host2:26379]/service_name[/db]`` (the master of
  ``service_name``, found through the sentinels);
- ``redis+cluster://host:7000[,host2:7001]`` and ``rediss+cluster://...`` (Redis Cluster; every
  per-thread key carries a ``{thread_id}`` hash tag so a thread's keys share one slot).

Only plain Redis commands and Lua are used: no modules (RedisJSON, RediSearch) are needed, and
Valkey speaks the same commands (tested here on Redis 7 only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode as SyncClusterNode
from redis.cluster import RedisCluster as SyncRedisCluster
from redis.exceptions import AuthenticationError, ResponseError
from redis.retry import Retry as SyncRetry
from redis.sentinel import Sentinel as SyncSentinel

from langgraph_resilient._urls import redact, split_url, url_hosts
from langgraph_resilient.errors import ConfigurationError, describe_error

_EXAMPLE = "redis://:password@host:6379/0"
_SCHEMES = ("redis", "rediss", "redis+sentinel", "redis+cluster", "rediss+cluster")


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """How the Redis tier connects and how long it waits before giving up on Redis."""

    url: str
    socket_timeout_s: float = 0.25
    """Time limit of a Redis call: a round trip (connecting included) may take twice this.
    Short on purpose: a slow Redis must not slow a graph step; after it the call counts as a
    Redis failure and the saver uses the local cache and Postgres."""
    connect_timeout_s: float = 0.5
    max_connections: int = 64
    key_ttl_s: int = 7 * 24 * 3600
    """Expiry of cached entries (heads, checkpoints, values, writes). Redis is a cache: an
    expired entry is read again from Postgres."""
    repair_interval_s: float = 1.0
    """How often each replica repairs threads that another replica wrote while it could not
    reach Redis. Bounds how long such a replica's writes can stay invisible to replicas that
    kept Redis (a partial outage)."""

    def __post_init__(self) -> None:
        parts = split_url(self.url, "redis_url", _EXAMPLE)
        if parts.scheme not in _SCHEMES:
            raise ConfigurationError(
                f"redis_url must use one of {', '.join(s + '://' for s in _SCHEMES)}; got "
                f"{redact(self.url)!r}"
            )
        url_hosts(parts, 26379 if parts.scheme == "redis+sentinel" else 6379, "redis_url", _EXAMPLE)
        if self.socket_timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ConfigurationError("Redis timeouts must be > 0")
        if self.key_ttl_s < 1:
            raise ConfigurationError("redis_key_ttl_s must be >= 1")
        if self.repair_interval_s <= 0:
            raise ConfigurationError("redis_repair_interval_s must be > 0")


def why_not_connected(exc: BaseException, settings: RedisSettings) -> str:
    """Why the first contact with Redis failed, as a user can act on it."""
    if isinstance(exc, AuthenticationError) or (
        isinstance(exc, ResponseError) and str(exc).startswith(("NOAUTH", "WRONGPASS", "NOPERM"))
    ):
        return (
            f"Redis refused the credentials ({describe_error(exc)}): check the user and "
            "password in redis_url (redis://user:password@host:6379/0)"
        )
    if isinstance(exc, TimeoutError):
        return (
            f"no answer within {settings.connect_timeout_s * 2:g}s: check that the host and port "
            "are right and reachable"
        )
    return f"unreachable ({describe_error(exc)})"


def connect(settings: RedisSettings) -> Any:
    """A redis-py asyncio client for ``settings.url`` (not yet connected: commands connect).

    The return type is ``Redis`` or ``RedisCluster``; both accept the commands the tier uses.
    """
    return _client(settings, _ASYNC)


def connect_sync(settings: RedisSettings) -> Any:
    """The same as :func:`connect`, for sync code (``redis.Redis`` or ``RedisCluster``)."""
    return _client(settings, _SYNC)


@dataclass(frozen=True, slots=True)
class _Flavour:
    """redis-py's client classes for one of its two APIs."""

    redis: Any
    sentinel: Any
    cluster: Any
    node: Any
    retry: Any


_ASYNC = _Flavour(Redis, Sentinel, RedisCluster, ClusterNode, Retry)
_SYNC = _Flavour(SyncRedis, SyncSentinel, SyncRedisCluster, SyncClusterNode, SyncRetry)


def _client(settings: RedisSettings, flavour: _Flavour) -> Any:
    url = settings.url
    parts = urlsplit(url)
    # No client-side retries (redis-py retries 10 times by default): a failing Redis must cost
    # one timeout at most, then the caller's breaker decides.
    common: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout_s,
        "socket_connect_timeout": settings.connect_timeout_s,
        "retry": flavour.retry(NoBackoff(), 0),
    }
    if parts.scheme in ("redis", "rediss"):
        return flavour.redis.from_url(url, max_connections=settings.max_connections, **common)
    password = unquote(parts.password) if parts.password else None
    username = unquote(parts.username) if parts.username and parts.password else None
    if parts.scheme == "redis+sentinel":
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ConfigurationError(
                "a Sentinel URL needs the service name: redis+sentinel://host:26379/mymaster/0"
            )
        service, db = path[0], int(path[1]) if len(path) > 1 else 0
        sentinel = flavour.sentinel(
            url_hosts(parts, 26379, "redis_url", _EXAMPLE),
            sentinel_kwargs=common,
            password=password,
            username=username,
            db=db,
            **common,
        )
        return sentinel.master_for(service)
    nodes = [
        flavour.node(host, port) for host, port in url_hosts(parts, 6379, "redis_url", _EXAMPLE)
    ]
    return flavour.cluster(
        startup_nodes=nodes,
        password=password,
        username=username,
        ssl=parts.scheme == "rediss+cluster",
        max_connections=settings.max_connections,
        **common,
    )
