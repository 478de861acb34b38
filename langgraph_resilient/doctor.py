"""``langgraph-resilient doctor``: checks the tiers a saver would use, without changing them.

Every check is read-only (doctor never migrates, and never creates an SQLite file) and has a
time limit, so doctor answers within seconds even when a host drops packets. It prints what it
found, each ``PROBLEM`` (exit status 1) and ``WARNING`` (exit status unchanged), then a verdict.

Redis eviction policies. The Redis tier gives every cache entry (heads, checkpoints, values,
pending writes) a TTL (``redis_key_ttl_s``), and the lease key a TTL of the lease's ``ttl_s``,
but two kinds of keys have none, on purpose: a thread's cache *generation* (``...:g``, the
counter that a delete, prune or outage repair bumps so that every older entry becomes
unreachable) and its lease *epoch* hash (``{thread}:epoch``). Hence:

- ``noeviction``: nothing is evicted. When ``maxmemory`` is reached, Redis refuses writes; the
  tier counts them as failures and the saver runs on the durable tier alone until entries
  expire. Safe.
- ``volatile-lru``, ``volatile-lfu``: only keys with a TTL are evicted, cold ones first: the
  generation counters and epoch hashes stay. A lease key is renewed every ``ttl_s / 3``, which
  keeps it among the hottest keys. Safe; ``volatile-lru`` is what the tier expects.
- ``allkeys-*``: may evict a generation counter; the thread's generation then reads as 0 again
  and entries written under generation 0 before a delete or repair (if they are still there)
  become reachable: a deleted or superseded head can be served. Problem.
- ``volatile-ttl`` (shortest TTL first: the lease keys, whose TTL is seconds while cache entries
  keep days) and ``volatile-random``: may evict a held lease key; Redis then accepts cache fills
  for a thread whose holder writes without publishing (see ``DeferredPublication``), so
  readers can be served a stale head until the holder releases. Problem.

With ``maxmemory 0`` (no limit) no policy is in effect, and an unsafe one is only a warning.

Persistence (RDB, AOF) is reported, not required: the tier treats a restarted Redis as an empty
cache (its ``run_id`` changes), and lease epochs are confirmed by the durable tier.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from langgraph_resilient._redis import client as redis_conn
from langgraph_resilient._redis.client import RedisSettings
from langgraph_resilient._urls import redact, split_url, url_hosts
from langgraph_resilient.checkpoint import ResilientSaver
from langgraph_resilient.checkpoint.durable.postgres import PostgresStore
from langgraph_resilient.checkpoint.durable.schema import SCHEMA_VERSION
from langgraph_resilient.checkpoint.durable.sqlite.schema import (
    READ_VERSION_SQL as SQLITE_READ_VERSION_SQL,
)
from langgraph_resilient.checkpoint.settings import POSTGRES_URL_EXAMPLE
from langgraph_resilient.errors import ConfigurationError, ResilientError, describe_error

T = TypeVar("T")

# The Postgres server's version: reported so that support questions start from it.
SERVER_VERSION_SQL = "SHOW server_version"

SAFE_POLICIES = {
    "noeviction": "nothing is evicted; when Redis is full its writes fail and the saver runs "
    "on the durable tier alone until entries expire",
    "volatile-lru": "only keys with a TTL are evicted, least recently used first (what the tier "
    "expects)",
    "volatile-lfu": "only keys with a TTL are evicted, least frequently used first",
}
UNSAFE_POLICIES = {
    "allkeys-lru": "it may evict keys without a TTL: a thread's cache generation (a deleted or "
    "superseded head can then be served again) and its lease epoch hash",
    "volatile-ttl": "it evicts the shortest TTL first, which is a held lease key: cache fills are "
    "then accepted while the lease holder writes without publishing (stale heads until it "
    "releases)",
    "volatile-random": "it may evict a held lease key: cache fills are then accepted while the "
    "lease holder writes without publishing (stale heads until it releases)",
}
UNSAFE_POLICIES["allkeys-lfu"] = UNSAFE_POLICIES["allkeys-lru"]
UNSAFE_POLICIES["allkeys-random"] = UNSAFE_POLICIES["allkeys-lru"]

MIN_REDIS_VERSION = (4, 0)
"""``UNLINK`` and multi-field ``HSET`` (used by the tier's scripts) need Redis 4.0."""
TESTED_REDIS_MAJOR = 7


class CheckFailed(Exception):
    """A check could not complete; the message is the problem to report."""


@dataclass
class Report:
    """What doctor found, printed as it goes."""

    out: Callable[[str], None] = print
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def info(self, text: str) -> None:
        self.out(f"  {text}")

    def problem(self, text: str) -> None:
        self.problems.append(text)
        self.out(f"  PROBLEM: {text}")

    def warning(self, text: str) -> None:
        self.warnings.append(text)
        self.out(f"  WARNING: {text}")

    def verdict(self) -> int:
        warned = f", {len(self.warnings)} warning(s)" if self.warnings else ""
        if self.problems:
            self.out(f"{len(self.problems)} problem(s){warned}")
            return 1
        self.out(f"ok{' (' + warned[2:] + ')' if warned else ''}")
        return 0


async def _within(timeout_s: float, what: str, awaitable: Awaitable[T]) -> T:
    """``awaitable``'s result, or :class:`CheckFailed` naming ``what`` after ``timeout_s``."""
    try:
        return await asyncio.wait_for(awaitable, timeout_s)
    except TimeoutError:
        raise CheckFailed(
            f"{what}: no answer within {timeout_s:g} s (doctor --timeout); the host may drop "
            "packets, or the port belongs to a server that does not speak this protocol"
        ) from None


# ------------------------------------------------------------------------------ hosts


def split_hosts(url: str, default_port: int) -> list[tuple[str, int]]:
    """``(host, port)`` of each host of a URL (``scheme://u:p@h1:5432,[::1]:5433/db``).

    Raises :class:`CheckFailed` naming what is malformed (a port that is not a number or out
    of range, an unclosed ``[``), with the password masked.
    """
    setting = "postgres_url" if url.startswith("postgres") else "redis_url"
    example = POSTGRES_URL_EXAMPLE if setting == "postgres_url" else "redis://host:6379/0"
    try:
        hosts = url_hosts(split_url(url, setting, example), default_port, setting, example)
    except ConfigurationError as exc:
        raise CheckFailed(str(exc)) from None
    return [(unquote(host), port) for host, port in hosts]


async def is_local(host: str, port: int, timeout_s: float) -> tuple[bool, list[str]]:
    """Whether ``host`` resolves to loopback addresses only (a Unix socket directory and an
    empty host count as local), and the addresses it resolves to."""
    if not host or host.startswith("/"):
        return True, [host or "(local socket)"]
    loop = asyncio.get_running_loop()
    try:
        infos = await _within(
            timeout_s,
            f"resolving {host}",
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM),
        )
    except socket.gaierror as exc:
        raise CheckFailed(f"cannot resolve host {host!r}: {exc}") from None
    addresses = sorted({str(info[4][0]) for info in infos})
    local = all(ipaddress.ip_address(a.partition("%")[0]).is_loopback for a in addresses)
    return local, addresses


# --------------------------------------------------------------------------- Postgres

_TLS_SSLMODES = {"require", "verify-ca", "verify-full"}


async def check_postgres(url: str, prefix: str, timeout_s: float, report: Report) -> None:
    """Host, TLS, connectivity, server version and schema version of the Postgres tier."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise CheckFailed(f"the Postgres URL must start with postgresql://, got {redact(url)!r}")
    query = parse_qs(parts.query)
    hosts = split_hosts(url, 5432)
    hosts += [(h, hosts[0][1]) for h in query.get("host", []) if h.startswith("/")]
    remote = []
    for host, port in hosts:
        local, addresses = await is_local(host, port, timeout_s)
        kind = "local" if local else "remote"
        report.info(f"host {host or '(default)'}: {', '.join(addresses)} ({kind})")
        if not local:
            remote.append(host)
    sslmode = (query.get("sslmode") or query.get("ssl") or [os.environ.get("PGSSLMODE", "")])[0]
    if remote and sslmode not in _TLS_SSLMODES:
        said = (
            f"sslmode={sslmode}"
            if sslmode
            else "no sslmode (asyncpg then falls back to plaintext when TLS fails)"
        )
        report.problem(
            f"{', '.join(remote)} is remote and the Postgres URL has {said}: add "
            "?sslmode=require (or verify-full) so that credentials and state travel encrypted"
        )
    saver = ResilientSaver.from_urls(
        postgres_url=url, prefix=prefix, migrate_on_enter=False, connect_timeout_s=timeout_s
    )
    store = saver.store
    assert isinstance(store, PostgresStore)
    settings = store.settings
    report.info(
        f"pool: min={settings.min_size} max={settings.max_size} "
        f"connect_timeout={settings.connect_timeout_s}s "
        f"command_timeout={settings.command_timeout_s}s pgbouncer={settings.pgbouncer}"
    )
    started = time.perf_counter()
    await _within(timeout_s, f"connecting to {redact(url)}", store.open())
    try:
        elapsed_ms = (time.perf_counter() - started) * 1000
        pool = store.pool
        assert pool is not None
        version = await _within(
            timeout_s, "reading the server version", pool.fetchval(SERVER_VERSION_SQL)
        )
        schema = await _within(timeout_s, "reading the schema version", store.schema_version())
        report.info(f"connected in {elapsed_ms:.0f} ms; PostgreSQL {version}")
        _report_schema(schema, report)
    finally:
        await _within(timeout_s, "closing the pool", store.close())


def _report_schema(version: int, report: Report) -> None:
    report.info(f"schema version {version} (this release: {SCHEMA_VERSION})")
    if version < SCHEMA_VERSION:
        report.problem("schema not migrated: run `langgraph-resilient migrate`")
    elif version > SCHEMA_VERSION:
        report.problem("the database schema is newer than this release: upgrade it")


# ----------------------------------------------------------------------------- SQLite


def check_sqlite(path: str, prefix: str, report: Report) -> None:
    """The embedded tier's file: exists, is a database, its schema version. Creates nothing:
    the file is opened read-only, and ``immutable`` unless its WAL files exist already
    (SQLite would create them for a read-only reader of a WAL database)."""
    absolute = os.path.abspath(path)
    if not os.path.exists(absolute):
        raise CheckFailed(
            f"{absolute} does not exist (doctor creates nothing): check --sqlite-path, or "
            "create it with `langgraph-resilient migrate --sqlite-path ...`"
        )
    if not os.path.isfile(absolute):
        raise CheckFailed(f"{absolute} is not a file")
    has_wal = os.path.exists(absolute + "-wal") and os.path.exists(absolute + "-shm")
    uri = f"file:{absolute}?mode=ro" + ("" if has_wal else "&immutable=1")
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise CheckFailed(f"cannot open {absolute}: {exc}") from None
    try:
        try:
            row = conn.execute(SQLITE_READ_VERSION_SQL.format(p=prefix)).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            row = None
    except sqlite3.DatabaseError as exc:
        raise CheckFailed(f"{absolute} is not a usable SQLite database: {exc}") from None
    finally:
        conn.close()
    with open(absolute, "rb") as file:
        header = file.read(20)
    # Byte 18 of the header is the file format's write version: 2 in WAL mode (the saver
    # switches a file to WAL when it opens it; an immutable reader reports no journal mode).
    journal = "wal" if len(header) == 20 and header[18] == 2 else "rollback (not WAL yet)"
    report.info(f"{os.path.getsize(absolute)} bytes, journal mode {journal}")
    _report_schema(int(row[0]) if row else 0, report)


# ------------------------------------------------------------------------------ Redis


async def check_redis(url: str, timeout_s: float, report: Report) -> None:
    """Connectivity, server, role, eviction policy and persistence of the Redis tier; for
    Sentinel and Cluster URLs, the topology found."""
    scheme = urlsplit(url).scheme
    default_port = 26379 if scheme == "redis+sentinel" else 6379
    hosts = split_hosts(url, default_port)
    for host, port in hosts:
        local, addresses = await is_local(host or "127.0.0.1", port, timeout_s)
        report.info(f"host {host}: {', '.join(addresses)} ({'local' if local else 'remote'})")
        if not local and not scheme.startswith("rediss"):
            report.warning(
                f"{host} is remote and the URL is not TLS: use rediss:// (or "
                "rediss+cluster://) so that cached state travels encrypted"
            )
    try:
        client = redis_conn.connect(
            RedisSettings(url=url, socket_timeout_s=timeout_s, connect_timeout_s=timeout_s)
        )
    except ValueError as exc:  # ConfigurationError included
        raise CheckFailed(f"malformed Redis URL {redact(url)!r}: {exc}") from None
    try:
        if scheme == "redis+sentinel":
            await _sentinel_topology(client, timeout_s, report)
        if scheme.endswith("+cluster"):
            await _cluster_topology(client, timeout_s, report)
        else:
            label = "master" if scheme == "redis+sentinel" else "server"
            where = f"the {label} of {redact(url)}"
            await _check_server(client.execute_command, label, where, timeout_s, report)
    finally:
        await _close(client, timeout_s)


async def _close(client: Any, timeout_s: float) -> None:
    """Close the client (and, for Sentinel, the clients of the sentinels)."""
    pool = getattr(client, "connection_pool", None)
    manager = getattr(pool, "sentinel_manager", None)
    for closer in [client.aclose(), *([manager.aclose()] if manager is not None else [])]:
        with contextlib.suppress(Exception):  # after a failed check: nothing more to report
            await asyncio.wait_for(closer, timeout_s)


def _redis_failure(what: str, exc: BaseException) -> CheckFailed:
    """A Redis client error as a problem that says what to change."""
    from redis.exceptions import (
        AuthenticationError,
        AuthenticationWrongNumberOfArgsError,
        ConnectionError,
        ResponseError,
        TimeoutError,
    )

    text = describe_error(exc)
    if isinstance(exc, AuthenticationError | AuthenticationWrongNumberOfArgsError) or (
        isinstance(exc, ResponseError) and str(exc).startswith(("NOAUTH", "WRONGPASS"))
    ):
        return CheckFailed(
            f"{what}: authentication failed ({text}): set the password (and user) in the URL, "
            "redis://user:password@host:6379/0"
        )
    if isinstance(exc, TimeoutError):
        return CheckFailed(
            f"{what}: no answer in time ({text}); the host may drop packets, or the port "
            "belongs to a server that does not speak Redis"
        )
    if isinstance(exc, ConnectionError) and "closed by server" in str(exc):
        return CheckFailed(
            f"{what}: the server closed the connection without a Redis reply ({text}): is "
            "this port a Redis server?"
        )
    if isinstance(exc, ConnectionError | OSError):
        return CheckFailed(f"{what}: cannot connect ({text})")
    return CheckFailed(f"{what}: {text}")


async def _redis(timeout_s: float, what: str, awaitable: Awaitable[T]) -> T:
    """A Redis call within the time limit; its errors as :class:`CheckFailed`."""
    from redis.exceptions import RedisClusterException, RedisError

    try:
        return await _within(timeout_s, what, awaitable)
    except (RedisError, RedisClusterException, OSError) as exc:
        raise _redis_failure(what, exc) from None


def _version(text: str) -> tuple[int, ...]:
    numbers = []
    for piece in text.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        numbers.append(int(digits or 0))
    return tuple(numbers)


async def _check_server(
    execute: Callable[..., Awaitable[Any]],
    label: str,
    where: str,
    timeout_s: float,
    report: Report,
) -> None:
    """PING, then one INFO: version, role, memory policy, persistence; then a Lua call.
    ``label`` names the server in the findings, ``where`` in errors."""
    started = time.perf_counter()
    await _redis(timeout_s, f"PING to {where}", execute("PING"))
    ping_ms = (time.perf_counter() - started) * 1000
    info = await _redis(timeout_s, f"INFO on {where}", execute("INFO"))
    if not isinstance(info, dict):
        raise CheckFailed(f"INFO on {where} gave no server information: {info!r:.200}")
    name = info.get("server_name", "redis")
    version = str(info.get("valkey_version") or info.get("redis_version", "?"))
    role = info.get("role", "?")
    report.info(
        f"{label}: PING in {ping_ms:.1f} ms; {name} {version}, role {role}, "
        f"mode {info.get('redis_mode', '?')}"
    )
    if _version(version)[:2] < MIN_REDIS_VERSION:
        report.problem(f"{label} runs {name} {version}: the tier's scripts need Redis 4.0 or later")
    elif name == "redis" and _version(version)[0] < TESTED_REDIS_MAJOR - 1:
        report.warning(f"{label} runs Redis {version}: this release is tested on Redis 7")
    if role != "master":
        report.problem(
            f"{label} is a {role}, which refuses writes: point the URL at the master, or use "
            "redis+sentinel:// so that the tier follows failovers"
        )
    if label == "server" and info.get("cluster_enabled") in (1, "1"):
        report.problem(f"{label} is a Redis Cluster node: use a redis+cluster:// URL")
    _report_memory(label, info, report)
    _report_persistence(label, info, report)
    reply = await _redis(timeout_s, f"a Lua script on {where}", execute("EVAL", "return 1", 0))
    if reply != 1:
        report.problem(f"{label}: EVAL gave {reply!r}: the tier needs Lua scripting")


def _report_memory(label: str, info: dict[str, Any], report: Report) -> None:
    maxmemory = int(info.get("maxmemory", 0) or 0)
    policy = str(info.get("maxmemory_policy", "?"))
    limit = (
        f"maxmemory {info.get('maxmemory_human', maxmemory)}"
        if maxmemory
        else ("maxmemory 0 (no limit)")
    )
    if policy in SAFE_POLICIES:
        report.info(f"{label}: {limit}, maxmemory-policy {policy}: {SAFE_POLICIES[policy]}")
    elif policy in UNSAFE_POLICIES:
        text = (
            f"{label}: maxmemory-policy {policy} is unsafe for the tier: "
            f"{UNSAFE_POLICIES[policy]}; set maxmemory-policy volatile-lru (or noeviction)"
        )
        if maxmemory:
            report.problem(f"{text} ({limit})")
        else:
            report.info(f"{label}: {limit}")
            report.warning(f"{text} (not in effect while maxmemory is 0)")
    else:
        report.warning(f"{label}: unknown maxmemory-policy {policy!r} ({limit})")


def _report_persistence(label: str, info: dict[str, Any], report: Report) -> None:
    aof = "on" if str(info.get("aof_enabled", "0")) == "1" else "off"
    saves = info.get("rdb_saves")
    rdb = f"last RDB save {info.get('rdb_last_bgsave_status', '?')}"
    if saves is not None:
        rdb += f", {saves} since start"
    report.info(
        f"{label}: persistence AOF {aof}, {rdb} (not needed: the tier takes a restarted "
        "Redis for an empty cache)"
    )


async def _sentinel_topology(client: Any, timeout_s: float, report: Report) -> None:
    """The sentinels that answer, and the master and replicas they name for the service."""
    pool = client.connection_pool
    service, manager = pool.service_name, pool.sentinel_manager
    answering = 0
    state: dict[str, Any] | None = None
    replicas: list[dict[str, Any]] = []
    for sentinel in manager.sentinels:
        kwargs = sentinel.connection_pool.connection_kwargs
        where = f"sentinel {kwargs['host']}:{kwargs['port']}"
        try:
            masters = await _redis(timeout_s, where, sentinel.sentinel_masters())
        except CheckFailed as exc:
            report.warning(str(exc))
            continue
        answering += 1
        if state is None and service in masters:
            state = masters[service]
            replicas = await _redis(timeout_s, where, sentinel.sentinel_slaves(service))
    report.info(f"sentinels: {answering} of {len(manager.sentinels)} in the URL answer")
    if answering == 0:
        raise CheckFailed(f"no sentinel of {len(manager.sentinels)} in the URL answers")
    if state is None:
        raise CheckFailed(
            f"no sentinel monitors a service named {service!r}: check the name in "
            "redis+sentinel://host:26379/<service>/<db>"
        )
    healthy = [r for r in replicas if not (r.get("is_sdown") or r.get("is_odown"))]
    report.info(
        f"service {service!r}: master {state['ip']}:{state['port']} (flags {state['flags']}), "
        f"{len(healthy)} of {len(replicas)} replica(s) up, "
        f"{int(state.get('num-other-sentinels', 0)) + 1} sentinel(s) know it, "
        f"quorum {state.get('quorum', '?')}"
    )
    if not state.get("is_master") or state.get("is_sdown") or state.get("is_odown"):
        report.problem(f"the sentinels report the master of {service!r} as down")
    if not healthy:
        report.warning(f"{service!r} has no replica that is up: a failover has nowhere to go")


async def _cluster_topology(client: Any, timeout_s: float, report: Report) -> None:
    """Cluster state and slot coverage, then the server checks on every primary."""
    await _redis(timeout_s, "connecting to the cluster", client.initialize())
    primaries, replicas = client.get_primaries(), client.get_replicas()
    info = await _redis(timeout_s, "CLUSTER INFO", client.cluster_info(target_nodes=primaries[0]))
    report.info(
        f"cluster: state {info.get('cluster_state')}, {info.get('cluster_slots_assigned')} of "
        f"16384 slots assigned, {len(primaries)} primary(ies), {len(replicas)} replica(s)"
    )
    if info.get("cluster_state") != "ok":
        report.problem(f"cluster state is {info.get('cluster_state')}, not ok")
    for node in primaries:

        def execute(*args: Any, node: Any = node) -> Awaitable[Any]:
            reply: Awaitable[Any] = client.execute_command(*args, target_nodes=node)
            return reply

        label = f"primary {node.name}"
        await _check_server(execute, label, label, timeout_s, report)


# ------------------------------------------------------------------------------- main


async def _doctor(
    postgres_url: str | None,
    sqlite_path: str | None,
    redis_url: str | None,
    prefix: str,
    timeout_s: float,
    report: Report,
) -> None:
    if postgres_url is not None:
        report.out(f"durable tier: postgres {redact(postgres_url)} (prefix {prefix!r})")
        await _guarded(report, check_postgres(postgres_url, prefix, timeout_s, report))
    else:
        assert sqlite_path is not None
        report.out(f"durable tier: sqlite {sqlite_path} (prefix {prefix!r})")
        await _guarded(report, asyncio.to_thread(check_sqlite, sqlite_path, prefix, report))
    if redis_url is not None:
        report.out(f"redis tier: {redact(redis_url)}")
        await _guarded(report, check_redis(redis_url, timeout_s, report))


async def _guarded(report: Report, check: Awaitable[None]) -> None:
    """Run one tier's checks; what stops them is a problem, not a traceback."""
    try:
        await check
    except CheckFailed as exc:
        report.problem(str(exc))
    except ResilientError as exc:
        report.problem(str(exc))
    except ValueError as exc:  # a malformed URL, from the URL parser
        report.problem(f"malformed URL: {exc}")


def run_doctor(
    *,
    postgres_url: str | None,
    sqlite_path: str | None,
    redis_url: str | None,
    prefix: str,
    timeout_s: float = 5.0,
    out: Callable[[str], None] = print,
) -> int:
    """Check the tiers and print the findings; returns the exit status (1: a problem)."""
    report = Report(out)
    sqlite_path = os.path.abspath(sqlite_path) if sqlite_path is not None else None
    asyncio.run(_doctor(postgres_url, sqlite_path, redis_url, prefix, timeout_s, report))
    return report.verdict()
