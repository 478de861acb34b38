"""Throwaway servers for fault tests: Postgres, Redis and pgbouncer on free loopback ports.

Each is started from the installed binaries, owned by the test that started it, and stopped by
PID. Only 127.0.0.1 is ever used.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PG_BIN = Path(os.environ.get("LGR_PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


def _as_postgres_user() -> tuple[list[str], int | None, int | None]:
    """Postgres refuses to run as root: when we are root, run its binaries as `postgres`."""
    if os.geteuid() != 0:
        return [], None, None
    pw = pwd.getpwnam("postgres")
    return ["runuser", "-u", "postgres", "--"], pw.pw_uid, pw.pw_gid


class PostgresServer:
    """A private Postgres cluster (initdb'd once per instance) that tests can stop and start."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="lgr-pg-"))
        self.data = self.root / "data"
        self._prefix, uid, gid = _as_postgres_user()
        if uid is not None and gid is not None:
            os.chown(self.root, uid, gid)
        subprocess.run(
            [*self._prefix, str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
             "-A", "trust", "--no-sync", "-E", "UTF8"],
            check=True, capture_output=True,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c fsync=off "
            f"-c unix_socket_directories={self.root} -c max_connections=50"
        )
        subprocess.run(
            [*self._prefix, str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", opts,
             "-l", str(self.root / "log"), "-w", "start"],
            check=True, capture_output=True,
        )  # fmt: skip
        wait_port(self.port)

    def pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().splitlines()[0])

    def stop(self, mode: str = "immediate") -> None:
        subprocess.run(
            [*self._prefix, str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"],
            check=False, capture_output=True,
        )  # fmt: skip

    def freeze(self) -> None:
        os.kill(self.pid(), signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid(), signal.SIGCONT)

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.thaw()
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class RedisServer:
    """A private redis-server (no persistence) that tests can stop, restart and freeze."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


class PgBouncer:
    """pgbouncer in transaction pooling mode in front of a Postgres database."""

    def __init__(self, upstream_port: int = 5432, database: str = "test") -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="lgr-pgb-"))
        self.database = database
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        (self.root / "users.txt").write_text('"postgres" ""\n')
        (self.root / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"{database} = host=127.0.0.1 port={upstream_port} dbname={database}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\n"
            f"unix_socket_dir =\nauth_type = trust\nauth_file = {self.root}/users.txt\n"
            "pool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 50\n"
            "ignore_startup_parameters = extra_float_digits\n"
            f"logfile = {self.root}/log\n"
        )
        # pgbouncer refuses to run as root; -u makes it drop to `postgres` itself.
        _, uid, gid = _as_postgres_user()
        user: list[str] = []
        if uid is not None and gid is not None:
            user = ["-u", "postgres"]
            for path in (self.root, *self.root.iterdir()):
                os.chown(path, uid, gid)
        self.proc = subprocess.Popen(
            [binary, *user, str(self.root / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(self.port)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.root, ignore_errors=True)
