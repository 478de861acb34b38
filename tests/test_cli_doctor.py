"""`langgraph-resilient doctor` checks the tiers for real, read-only, each within a time limit.

Redis: the shared server, a closed port, a malformed port, the Postgres port (another
protocol), a black hole (a listening socket that never answers), AUTH, eviction policies, a
replica, and private Sentinel and Cluster servers. The durable tier: a missing SQLite file is
reported and not created, Postgres is never migrated, and localhost/[::1] are local hosts.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from langgraph_resilient import ResilientSaver
from langgraph_resilient.checkpoint.durable.schema import SCHEMA_VERSION
from langgraph_resilient.cli import main
from tests.conftest import POSTGRES_URL, REDIS_URL, drop_prefixed_tables, unique_prefix
from tests.servers import (
    RedisClusterServers,
    RedisSentinelServers,
    RedisServer,
    free_port,
    running,
)

PG_PORT = int(POSTGRES_URL.rsplit(":", 1)[1].split("/")[0])


@pytest.fixture
def migrated_sqlite(tmp_path: Path) -> Path:
    """An SQLite file with the current schema, its saver closed."""
    path = tmp_path / "state.db"
    assert main(["migrate", "--sqlite-path", str(path)]) == 0
    return path


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    status = main(["doctor", *args])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def redis_doctor(
    capsys: pytest.CaptureFixture[str], sqlite: Path, url: str, *extra: str
) -> tuple[int, str]:
    return doctor(capsys, "--sqlite-path", str(sqlite), "--redis-url", url, *extra)


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port that accepts connections (the kernel completes the handshake) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


# ------------------------------------------------------------------------------ Redis


def test_redis_reports_server_role_policy_and_persistence(
    capsys: pytest.CaptureFixture[str], migrated_sqlite: Path
) -> None:
    status, out = redis_doctor(capsys, migrated_sqlite, REDIS_URL)
    assert status == 0, out
    assert f"redis tier: {REDIS_URL}" in out
    assert "server: PING in" in out and "role master" in out and "redis 7." in out
    assert "maxmemory-policy noeviction" in out
    assert "persistence AOF" in out
    assert out.rstrip().endswith("ok")


def test_redis_closed_port_is_a_problem(
    capsys: pytest.CaptureFixture[str], migrated_sqlite: Path
) -> None:
    status, out = redis_doctor(capsys, migrated_sqlite, f"redis://127.0.0.1:{free_port()}/0")
    assert status == 1
    assert "PROBLEM: PING to the server of redis://127.0.0.1:" in out
    assert "cannot connect" in out and "refused" in out.lower()


@pytest.mark.parametrize("port", ["abc", "99999", "-1"])
def test_redis_malformed_port_is_refused_before_connecting(
    capsys: pytest.CaptureFixture[str], migrated_sqlite: Path, port: str
) -> None:
    status, out = redis_doctor(capsys, migrated_sqlite, f"redis://:pw@127.0.0.1:{port}/0")
    assert status == 2
    assert "--redis-url" in out and port.lstrip("-") in out
    assert ":pw@" not in out
    assert "Traceback" not in out


def test_redis_url_on_the_postgres_port_is_a_problem(
    capsys: pytest.CaptureFixture[str], migrated_sqlite: Path
) -> None:
    status, out = redis_doctor(capsys, migrated_sqlite, f"redis://127.0.0.1:{PG_PORT}/0")
    assert status == 1
    assert "closed the connection without a Redis reply" in out


def test_redis_black_hole_is_a_problem_within_the_time_limit(
    capsys: pytest.CaptureFixture[str], migrated_sqlite: Path, black_hole: int
) -> None:
    url = f"redis://127.0.0.1:{black_hole}/0"
    started = time.monotonic()
    status, out = redis_doctor(capsys, migrated_sqlite, url, "--timeout", "0.5")
    elapsed = time.monotonic() - started
    assert status == 1
    assert "no answer" in out and "0.5 s" in out
    assert elapsed < 5, f"doctor took {elapsed:.1f} s with a 0.5 s limit per check"


def test_redis_authentication_failures_name_the_fix_and_mask_the_password(
    capsys: pytest.CaptureFixture[str], migrated_sqlite: Path
) -> None:
    for server in running(RedisServer("--requirepass", "s3cret-pw")):
        base = f"127.0.0.1:{server.port}/0"
        status, out = redis_doctor(capsys, migrated_sqlite, f"redis://{base}")
        assert status == 1 and "authentication failed" in out, out
        status, out = redis_doctor(capsys, migrated_sqlite, f"redis://:not-it-pw@{base}")
        assert status == 1 and "authentication failed" in out, out
        assert "not-it-pw" not in out and "redis://:***@" in out
        status, out = redis_doctor(capsys, migrated_sqlite, f"redis://:s3cret-pw@{base}")
        assert status == 0, out
        assert "s3cret-pw" not in out


@pytest.mark.parametrize(
    ("maxmemory", "policy", "status", "finding"),
    [
        ("64mb", "volatile-lru", 0, "what the tier expects"),
        ("64mb", "noeviction", 0, "nothing is evicted"),
        ("64mb", "allkeys-lru", 1, "PROBLEM: server: maxmemory-policy allkeys-lru is unsafe"),
        ("64mb", "volatile-ttl", 1, "PROBLEM: server: maxmemory-policy volatile-ttl is unsafe"),
        ("0", "allkeys-lfu", 0, "not in effect while maxmemory is 0"),
    ],
)
def test_redis_eviction_policy(
    capsys: pytest.CaptureFixture[str],
    migrated_sqlite: Path,
    maxmemory: str,
    policy: str,
    status: int,
    finding: str,
) -> None:
    for server in running(RedisServer("--maxmemory", maxmemory, "--maxmemory-policy", policy)):
        got, out = redis_doctor(capsys, migrated_sqlite, server.url)
        assert got == status, out
        assert finding in out
        if policy.startswith("allkeys"):
            assert "generation" in out and "volatile-lru" in out


def test_redis_replica_url_is_a_problem(
    capsys: pytest.CaptureFixture[str], migrated_sqlite: Path
) -> None:
    for master in running(RedisServer()):
        for replica in running(RedisServer("--replicaof", "127.0.0.1", str(master.port))):
            status, out = redis_doctor(capsys, migrated_sqlite, replica.url)
            assert status == 1
            assert "role slave" in out and "refuses writes" in out and "redis+sentinel://" in out


def test_redis_sentinel_reports_the_topology(
    capsys: pytest.CaptureFixture[str], migrated_sqlite: Path
) -> None:
    for servers in running(RedisSentinelServers("mymaster")):
        url = servers.url().replace("redis+sentinel://", "redis+sentinel://:sentinel-pw@")
        status, out = redis_doctor(capsys, migrated_sqlite, servers.url())
        assert status == 0, out
        assert "sentinels: 1 of 1 in the URL answer" in out
        assert f"service 'mymaster': master 127.0.0.1:{servers.master.port}" in out
        assert "WARNING: 'mymaster' has no replica that is up" in out
        assert "master: PING in" in out and "role master" in out
        status, out = redis_doctor(capsys, migrated_sqlite, url.replace("mymaster", "nosuch"))
        assert status == 1
        assert "no sentinel monitors a service named 'nosuch'" in out
        assert "sentinel-pw" not in out


def test_redis_sentinel_unreachable_is_a_problem(
    capsys: pytest.CaptureFixture[str], migrated_sqlite: Path
) -> None:
    url = f"redis+sentinel://127.0.0.1:{free_port()}/mymaster/0"
    status, out = redis_doctor(capsys, migrated_sqlite, url)
    assert status == 1
    assert "no sentinel of 1 in the URL answers" in out


def test_redis_cluster_reports_the_topology_and_every_primary(
    capsys: pytest.CaptureFixture[str], migrated_sqlite: Path
) -> None:
    for cluster in running(RedisClusterServers(3)):
        status, out = redis_doctor(capsys, migrated_sqlite, cluster.url)
        assert status == 0, out
        assert "cluster: state ok, 16384 of 16384 slots assigned, 3 primary(ies)" in out
        for port in cluster.ports:
            assert f"primary 127.0.0.1:{port}: PING in" in out
        status, out = redis_doctor(
            capsys, migrated_sqlite, f"redis://127.0.0.1:{cluster.ports[0]}/0"
        )
        assert status == 1 and "is a Redis Cluster node: use a redis+cluster:// URL" in out


def test_redis_cluster_url_on_a_plain_server_is_a_problem(
    capsys: pytest.CaptureFixture[str], migrated_sqlite: Path
) -> None:
    url = REDIS_URL.replace("redis://", "redis+cluster://").rsplit("/", 1)[0]
    status, out = redis_doctor(capsys, migrated_sqlite, url)
    assert status == 1
    assert "Cluster mode is not enabled" in out


# ----------------------------------------------------------------------- durable tier


def test_missing_sqlite_file_is_reported_and_not_created(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "nested" / "state.db"
    status, out = doctor(capsys, "--sqlite-path", str(path))
    assert status == 1
    assert f"PROBLEM: {path} does not exist" in out
    assert list(tmp_path.iterdir()) == [], "doctor created something"


def test_existing_sqlite_file_is_read_without_leaving_files(
    capsys: pytest.CaptureFixture[str], migrated_sqlite: Path
) -> None:
    before = sorted(os.listdir(migrated_sqlite.parent))
    status, out = doctor(capsys, "--sqlite-path", str(migrated_sqlite))
    assert status == 0, out
    assert f"schema version {SCHEMA_VERSION} (this release: {SCHEMA_VERSION})" in out
    assert "journal mode wal" in out
    assert sorted(os.listdir(migrated_sqlite.parent)) == before


def test_an_empty_sqlite_file_is_unmigrated_and_stays_empty(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    status, out = doctor(capsys, "--sqlite-path", str(path))
    assert status == 1
    assert "schema not migrated" in out
    assert path.stat().st_size == 0
    assert os.listdir(tmp_path) == ["empty.db"]


def test_a_file_that_is_not_a_database_is_a_problem(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "notes.db"
    path.write_text("not a database " * 100)
    status, out = doctor(capsys, "--sqlite-path", str(path))
    assert status == 1
    assert "is not a usable SQLite database" in out


def test_postgres_is_never_migrated(capsys: pytest.CaptureFixture[str]) -> None:
    prefix = unique_prefix()

    async def tables() -> list[str]:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            rows = await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE starts_with(tablename, $1)", prefix
            )
        finally:
            await conn.close()
        return [r["tablename"] for r in rows]

    try:
        status, out = doctor(capsys, "--postgres-url", POSTGRES_URL, "--prefix", prefix)
        assert status == 1
        assert "schema version 0" in out and "run `langgraph-resilient migrate`" in out
        assert "connected in" in out and "PostgreSQL 15" in out
        assert asyncio.run(tables()) == []
    finally:
        asyncio.run(drop_prefixed_tables(POSTGRES_URL, prefix))


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_local_postgres_hosts_need_no_sslmode(
    capsys: pytest.CaptureFixture[str], host: str
) -> None:
    prefix = unique_prefix()
    url = POSTGRES_URL.replace("127.0.0.1", host)
    try:
        assert main(["migrate", "--postgres-url", url, "--prefix", prefix]) == 0
        status, out = doctor(capsys, "--postgres-url", url, "--prefix", prefix)
        assert status == 0, out
        assert f"host {host}: 127.0.0.1 (local)" in out
        assert "sslmode" not in out
    finally:
        asyncio.run(drop_prefixed_tables(POSTGRES_URL, prefix))


def test_ipv6_loopback_is_local(capsys: pytest.CaptureFixture[str]) -> None:
    # The shared Postgres listens on 127.0.0.1 only: connecting to [::1] fails, but it is
    # judged a local host (no TLS demanded), which is what this test is about.
    url = f"postgresql://postgres@[::1]:{PG_PORT}/test"
    _, out = doctor(capsys, "--postgres-url", url, "--timeout", "2")
    assert "host ::1: ::1 (local)" in out
    assert "sslmode" not in out


async def test_locality_is_decided_by_the_resolved_address() -> None:
    from langgraph_resilient.doctor import is_local

    # Literals and /etc/hosts names only: resolving them sends no packet anywhere.
    assert (await is_local("localhost", 5432, 2.0))[0]
    assert (await is_local("127.0.0.2", 5432, 2.0))[0]
    assert (await is_local("::1", 5432, 2.0))[0]
    assert (await is_local("/var/run/postgresql", 5432, 2.0))[0]
    assert not (await is_local("192.0.2.10", 5432, 2.0))[0]  # TEST-NET-1, never contacted
    assert not (await is_local("2001:db8::1", 5432, 2.0))[0]


def test_malformed_postgres_urls_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for url in ["postgresql://u:pw@[::1/db", "postgresql://u:pw@127.0.0.1:port/db"]:
        status, out = doctor(capsys, "--postgres-url", url)
        assert status == 2, out
        assert "--postgres-url" in out and "Traceback" not in out
        assert "u:pw" not in out


def test_doctor_reads_sqlite_written_by_a_saver_that_is_still_open(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "live.db"

    async def check_while_open() -> tuple[int, str]:
        async with ResilientSaver.from_urls(sqlite_path=str(path)):
            assert (tmp_path / "live.db-wal").exists()
            return await asyncio.to_thread(doctor, capsys, "--sqlite-path", str(path))

    status, out = asyncio.run(check_while_open())
    assert status == 0, out
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
