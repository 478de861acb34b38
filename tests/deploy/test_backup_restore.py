"""The backup and restore drill of deploy/backup/backup-restore.sh, on real servers.

A private Postgres archives its WAL to pgBackRest (configured from deploy/backup/pgbackrest.conf,
paths moved into the test's directory). 50 threads are written through ResilientSaver (with a
private Redis in front), half before the full backup and half after it (those exist only in
the archived WAL), then a named restore point, then one more thread, and the database is
dropped. The restore goes to a new cluster and stops at the restore point (point-in-time
recovery): the 50 threads read back identical through a new saver with Redis flushed, the
51st is not there, and Redis fills up again by itself. A second restore, to a time after the
51st thread and before the drop, has all 51. Retention is tested last: two full
backups, cleanup with a retention of one, the older backup and its WAL are gone.
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import json
import operator
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import asyncpg
import pytest
import redis.asyncio
from langgraph.graph import END, START, StateGraph

from langgraph_resilient import ResilientSaver
from tests.deploy.assets import DEPLOY
from tests.servers import PostgresServer, RedisServer, running

SCRIPT = DEPLOY / "backup" / "backup-restore.sh"
STANZA = "langgraph"
PREFIX = "drill_"


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def _graph() -> StateGraph[State]:
    builder: StateGraph[State] = StateGraph(State)
    builder.add_node("intake", lambda s: {"log": [f"intake {len(s['log'])}"]})
    builder.add_node("answer", lambda s: {"log": ["answer"]})
    builder.add_edge(START, "intake")
    builder.add_edge("intake", "answer")
    builder.add_edge("answer", END)
    return builder


def _as_postgres() -> list[str]:
    """pgBackRest runs as the cluster's owner: as root, through runuser."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _chown_postgres(*paths: Path) -> None:
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        for path in paths:
            os.chown(path, pw.pw_uid, pw.pw_gid)


class Drill:
    """The script, run as an operator would, against one private cluster and repository."""

    def __init__(self, source: PostgresServer, root: Path) -> None:
        self.source = source
        self.root = root
        self.config = root / "pgbackrest.conf"
        for sub in ("repo", "log", "lock"):
            (root / sub).mkdir()
            _chown_postgres(root / sub)
        _chown_postgres(root)
        # The committed configuration, with the paths of this test's cluster and repository.
        conf = configparser.ConfigParser(interpolation=None)
        conf.optionxform = str  # keep the options' case
        conf.read(DEPLOY / "backup" / "pgbackrest.conf")
        conf["global"].update(
            {"repo1-path": str(root / "repo"), "log-path": str(root / "log"),
             "lock-path": str(root / "lock")}
        )  # fmt: skip
        conf[STANZA].update(
            {"pg1-path": str(source.data), "pg1-port": str(source.port),
             "pg1-socket-path": str(source.root)}
        )  # fmt: skip
        with self.config.open("w") as f:
            conf.write(f)
        _chown_postgres(self.config)

    def run(self, *args: str, env: dict[str, str] | None = None) -> str:
        environment = {
            "PGBACKREST_CONFIG": str(self.config),
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.source.port),
            "PGUSER": "postgres",
            "PGDATABASE": "postgres",
            **(env or {}),
        }
        command = [*_as_postgres(), "env", *[f"{k}={v}" for k, v in environment.items()],
                   "bash", str(SCRIPT), *args]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
        return done.stdout

    def backups(self) -> list[dict[str, Any]]:
        (stanza,) = json.loads(self.run("info", "--output=json"))
        return list(stanza["backup"])

    def archive_min(self) -> str:
        (stanza,) = json.loads(self.run("info", "--output=json"))
        return str(stanza["archive"][0]["min"])


@pytest.fixture
def source() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def drill(source: PostgresServer) -> Iterator[Drill]:
    root = Path(tempfile.mkdtemp(prefix="lgr-backup-"))
    drill = Drill(source, root)
    # What pgbackrest.conf's header asks of the primary.
    with (source.data / "postgresql.conf").open("a") as conf:
        conf.write(
            "archive_mode = on\n"
            f"archive_command = 'pgbackrest --config={drill.config} --stanza={STANZA} "
            "archive-push %p'\n"
        )
    try:
        yield drill
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cache() -> Iterator[RedisServer]:
    yield from running(RedisServer())


def _app_url(server: PostgresServer) -> str:
    return f"postgresql://postgres@127.0.0.1:{server.port}/app"


async def _write(server: PostgresServer, cache: RedisServer, threads: range) -> None:
    """Two turns per thread through ResilientSaver on Postgres + Redis, eight at a time."""
    async with ResilientSaver.from_urls(
        postgres_url=_app_url(server), redis_url=cache.url, prefix=PREFIX
    ) as saver:
        graph = _graph().compile(checkpointer=saver)
        gate = asyncio.Semaphore(8)

        async def turns(i: int) -> None:
            async with gate:
                config = {"configurable": {"thread_id": f"thread-{i}"}}
                await graph.ainvoke({"log": [f"hello {i}"]}, config)
                await graph.ainvoke({"log": [f"again {i}"]}, config)

        await asyncio.gather(*(turns(i) for i in threads))


async def _read(server: PostgresServer, cache: RedisServer, threads: range) -> dict[str, Any]:
    """Each thread's state and every checkpoint tuple of its history, through a new saver."""
    async with ResilientSaver.from_urls(
        postgres_url=_app_url(server), redis_url=cache.url, prefix=PREFIX
    ) as saver:
        graph = _graph().compile(checkpointer=saver)
        found: dict[str, Any] = {}
        for i in threads:
            config = {"configurable": {"thread_id": f"thread-{i}"}}
            history = [
                (t.config, t.checkpoint, t.metadata, t.parent_config, t.pending_writes)
                async for t in saver.alist(config)
            ]
            state = await graph.aget_state(config)
            found[f"thread-{i}"] = (state.values, history) if history else None
        return found


async def _sql(server: PostgresServer, statement: str, database: str = "postgres") -> Any:
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{server.port}/{database}")
    try:
        return await conn.fetchval(statement)
    finally:
        await conn.close()


async def _wait_promoted(server: PostgresServer, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while await _sql(server, "SELECT pg_is_in_recovery()"):
        assert time.monotonic() < deadline, "the restored cluster did not finish its recovery"
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def _restored(drill: Drill, *target: str) -> AsyncIterator[PostgresServer]:
    """A new cluster restored by the script up to ``target``, started and promoted."""
    server = PostgresServer()
    try:
        shutil.rmtree(server.data)
        # --archive-mode=off: this copy must not archive into the source's repository.
        out = drill.run("restore", "--to", str(server.data), *target, "--", "--archive-mode=off")
        assert f"pg_ctl -D {server.data} start" in out
        server.start()
        await _wait_promoted(server)
        yield server
    finally:
        server.destroy()


async def _read_with_redis_flushed(
    server: PostgresServer, cache: RedisServer, threads: range
) -> dict[str, Any]:
    client = redis.asyncio.Redis.from_url(cache.url)
    try:
        await client.flushall()  # the private Redis: its entries describe the old database
        found = await _read(server, cache, threads)
        assert await client.dbsize() > 0, "the saver refills Redis by itself"
    finally:
        await client.aclose()
    return found


@pytest.mark.timeout(240)
async def test_backup_drop_and_point_in_time_restore_to_a_new_cluster(
    source: PostgresServer, drill: Drill, cache: RedisServer
) -> None:
    source.start()
    await _sql(source, "CREATE DATABASE app")
    drill.run("init")

    await _write(source, cache, range(25))
    drill.run("backup", "full")
    await _write(source, cache, range(25, 50))  # after the backup: only in the archived WAL
    drill.run("restore-point", "before-drop")
    await _write(source, cache, range(50, 51))  # after the point
    expected = await _read(source, cache, range(51))
    assert all(expected.values())
    assert len(expected["thread-0"][1]) == 8  # per turn: the input, then start, intake, answer
    drill.run("check")  # archives the WAL that holds thread-50
    target_time = str(await _sql(source, "SELECT now()::text"))
    await asyncio.sleep(0.05)
    # A commit after the target time, archived, so that recovery to that time can stop there.
    await _sql(source, "CREATE TABLE after_target_time ()")
    drill.run("check")
    await _sql(source, "DROP DATABASE app")

    # To the restore point: the 50 threads, identical; thread-50 came after it.
    async with _restored(drill, "--name", "before-drop") as restored:
        got = await _read_with_redis_flushed(restored, cache, range(51))
        assert got.pop("thread-50") is None
        assert got == {k: v for k, v in expected.items() if k != "thread-50"}
        assert await _sql(restored, "SELECT to_regclass('after_target_time')::text") is None

    # To a time: thread-50 too, and nothing after that time.
    async with _restored(drill, "--time", target_time) as restored:
        assert await _read_with_redis_flushed(restored, cache, range(51)) == expected
        assert await _sql(restored, "SELECT to_regclass('after_target_time')::text") is None

    # Retention: a second full backup is kept with the committed retention (2 full) ...
    first = drill.backups()
    assert [b["type"] for b in first] == ["full"]
    drill.run("backup", "full")
    assert [b["type"] for b in drill.backups()] == ["full", "full"]
    wal_before = drill.archive_min()
    drill.run("cleanup")
    assert len(drill.backups()) == 2
    # ... and cleanup with a retention of one expires the older backup and the WAL before it.
    drill.run("cleanup", env={"PGBACKREST_REPO1_RETENTION_FULL": "1"})
    (kept,) = drill.backups()
    assert kept["label"] != first[0]["label"]
    assert drill.archive_min() > wal_before
