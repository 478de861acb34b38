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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

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

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.args = args
        """Extra ``redis-server`` options (``"--replicaof", "127.0.0.1", "6380"``)."""
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning", *self.args],
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


class _Startable(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


S = TypeVar("S", bound=_Startable)


def running(servers: S) -> Iterator[S]:
    """Start ``servers`` for a test (a fixture's body: ``yield from running(...)``) and stop
    them, by PID, afterwards whatever happens."""
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


def _distinct_free_ports(count: int) -> list[int]:
    """``count`` different free ports on 127.0.0.1."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _kill(proc: subprocess.Popen[bytes] | None) -> None:
    """Stop a process this module started, by its PID, and reap it."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGCONT)
        proc.kill()
    proc.wait(timeout=10)


def _redis_cli(port: int, *args: str, timeout_s: float = 10.0) -> str:
    done = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        check=True, capture_output=True, timeout=timeout_s,
    )  # fmt: skip
    return done.stdout.decode()


def _wait_until(check: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(subprocess.SubprocessError):
            if check():
                return
        time.sleep(0.05)
    raise TimeoutError(f"{what} after {timeout_s}s")


class RedisSentinelServers:
    """A private Redis master and one Sentinel (quorum 1) that monitors it as ``service``;
    with ``replica=True`` also a replica of the master, so that the Sentinel can fail over.

    ``master`` and ``replica`` name the servers' roles at the start: after a failover the
    replica is the master. The Sentinel's configuration lives in a private directory: Sentinel
    rewrites it.
    """

    def __init__(
        self, service: str = "mymaster", *, replica: bool = False, down_after_ms: int = 5000
    ) -> None:
        self.service = service
        self.down_after_ms = down_after_ms
        self.root = Path(tempfile.mkdtemp(prefix="lgr-sentinel-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.replica: RedisServer | None = None
        if not replica:
            self.master = RedisServer()
        else:
            # Either server may be a replica (the master after a failover): each has a data
            # directory of its own for the RDB a replica writes when it syncs (not the cwd),
            # and a full sync starts at once (Redis 7 waits 5 s for more replicas by default).
            for name in ("master", "replica"):
                (self.root / name).mkdir()
            sync = ("--repl-diskless-sync-delay", "0")
            self.master = RedisServer("--dir", str(self.root / "master"), *sync)
            self.replica = RedisServer(
                "--dir", str(self.root / "replica"), *sync,
                "--replicaof", "127.0.0.1", str(self.master.port),
            )  # fmt: skip
        taken = {self.master.port}
        if self.replica is not None:
            while self.replica.port in taken:
                self.replica.port = free_port()
            taken.add(self.replica.port)
        self.port = free_port()
        while self.port in taken:
            self.port = free_port()

    def url(self, db: int = 0) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.service}/{db}"

    def master_port(self) -> int | None:
        """The port of the master the Sentinel names now."""
        reply = self.sentinel("GET-MASTER-ADDR-BY-NAME", self.service).split()
        return int(reply[1]) if len(reply) == 2 else None

    def sentinel(self, *args: str) -> str:
        """``SENTINEL <args>`` against the Sentinel; its reply as redis-cli prints it."""
        return _redis_cli(self.port, "SENTINEL", *args)

    def start(self) -> None:
        replica = self.replica
        self.master.start()
        if replica is not None:
            replica.start()
            _wait_until(
                lambda: "master_link_status:up" in _redis_cli(replica.port, "INFO", "replication"),
                f"the replica on {replica.port} did not sync with its master",
            )
        conf = self.root / "sentinel.conf"
        conf.write_text(
            f"bind 127.0.0.1\nport {self.port}\ndaemonize no\nloglevel warning\n"
            f'dir "{self.root}"\nlogfile ""\n'
            f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
            f"sentinel failover-timeout {self.service} {max(3 * self.down_after_ms, 5000)}\n"
        )
        self.proc = subprocess.Popen(
            ["redis-server", str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(self.port)
        _wait_until(
            lambda: self.master_port() == self.master.port,
            f"the sentinel on {self.port} does not know {self.service}",
        )
        if replica is not None:
            # Sentinel polls INFO every 10 s and turns a demoted master that still says it is
            # one into a replica only 4 publish periods (8 s) after it noticed: with shorter
            # periods (Redis >= 7) a SENTINEL FAILOVER ends in about 2 s instead of 11 s.
            self.sentinel("DEBUG", "info-period", "250", "publish-period", "250")
            # SENTINEL FAILOVER needs a replica the Sentinel has seen (it learns of replicas
            # from the master's INFO) and whose link to the master is up.
            _wait_until(
                lambda: f"127.0.0.1:{replica.port}" in self._known_replicas(),
                f"the sentinel on {self.port} does not know the replica",
            )

    def _known_replicas(self) -> set[str]:
        """``host:port`` of the replicas the Sentinel could promote now."""
        lines = self.sentinel("REPLICAS", self.service).splitlines()
        replicas: list[dict[str, str]] = []
        for field, value in zip(lines[0::2], lines[1::2], strict=False):
            if field == "name":
                replicas.append({})
            if replicas:
                replicas[-1][field] = value
        return {
            r["name"]
            for r in replicas
            if r.get("flags") == "slave"
            and r.get("role-reported") == "slave"
            and r.get("master-link-status") == "ok"
        }

    def stop(self) -> None:
        try:
            _kill(self.proc)
            self.proc = None
        finally:
            try:
                if self.replica is not None:
                    self.replica.stop()
            finally:
                self.master.stop()
                shutil.rmtree(self.root, ignore_errors=True)


class RedisClusterServers:
    """A private Redis Cluster: ``size`` masters on loopback, no replicas, no persistence."""

    def __init__(self, size: int = 3) -> None:
        ports = _distinct_free_ports(2 * size)
        self.ports = ports[:size]
        self.bus_ports = ports[size:]  # explicit: port + 10000 may be past 65535
        self.root = Path(tempfile.mkdtemp(prefix="lgr-cluster-"))
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self) -> None:
        for port, bus_port in zip(self.ports, self.bus_ports, strict=True):
            command = [
                "redis-server", "--bind", "127.0.0.1", "--port", str(port),
                "--cluster-enabled", "yes", "--cluster-port", str(bus_port),
                "--cluster-config-file", str(self.root / f"nodes-{port}.conf"),
                "--dir", str(self.root), "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--loglevel", "warning",
            ]  # fmt: skip
            self.procs.append(
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        for port in self.ports:
            wait_port(port)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        for port in self.ports:
            _wait_until(
                lambda port=port: "cluster_state:ok" in _redis_cli(port, "CLUSTER", "INFO"),
                f"the cluster node on {port} is not ok",
            )

    def stop(self) -> None:
        try:
            for proc in self.procs:  # all killed first: one slow exit must not spare the rest
                if proc.poll() is None:
                    proc.kill()
            for proc in self.procs:
                _kill(proc)
            self.procs = []
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class TlsRedisServer:
    """A private redis-server that only speaks TLS, with a certificate from a throwaway CA
    (server certificate for IP 127.0.0.1; clients are not asked for certificates)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="lgr-tls-"))
        self.ca_cert = self.root / "ca.crt"
        self.cert = self.root / "server.crt"
        self.key = self.root / "server.key"
        self.proc: subprocess.Popen[bytes] | None = None
        self._make_certificates()

    def _make_certificates(self) -> None:
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        ca_key = self.root / "ca.key"
        csr = self.root / "server.csr"
        ext = self.root / "server.ext"
        ext.write_text(
            "subjectAltName = IP:127.0.0.1\nbasicConstraints = critical, CA:FALSE\n"
            "keyUsage = critical, digitalSignature, keyEncipherment\n"
            "extendedKeyUsage = serverAuth\nsubjectKeyIdentifier = hash\n"
            "authorityKeyIdentifier = keyid, issuer\n"
        )
        for command in (
            ["openssl", "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(self.ca_cert),
             "-days", "2", "-subj", "/CN=lgr test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ["openssl", "req", *ec, "-keyout", str(self.key), "-out", str(csr),
             "-subj", "/CN=127.0.0.1"],
            ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(self.ca_cert),
             "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(self.cert), "-days", "2",
             "-extfile", str(ext)],
        ):  # fmt: skip
            subprocess.run(command, check=True, capture_output=True, timeout=30)

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca_cert}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", "0",
             "--tls-port", str(self.port), "--tls-cert-file", str(self.cert),
             "--tls-key-file", str(self.key), "--tls-ca-cert-file", str(self.ca_cert),
             "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_port(self.port)

    def stop(self) -> None:
        try:
            _kill(self.proc)
            self.proc = None
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
