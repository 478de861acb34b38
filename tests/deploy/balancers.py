"""The committed load balancer configurations, run for real in front of live replicas.

``Haproxy`` runs ``deploy/haproxy/haproxy.cfg`` as committed: every address it needs comes
from its environment variables (``LGR_BIND``, ``LGR_REPLICA_1..3``, ``LGR_STATS_BIND``,
``LGR_ADMIN_SOCKET``). ``Nginx`` runs a rendered copy of ``deploy/nginx/``: the listen ports and
the upstream addresses are substituted (nginx reads no environment), nothing else is changed.
Both are child processes of the test, stopped by PID, their logs (HAProxy's HTTP log, nginx's
JSON access log) kept for the test to read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.assets import DEPLOY
from tests.servers import free_port, wait_port

HAPROXY_BACKEND = "langgraph_servers"
HAPROXY_SERVERS = ("app1", "app2", "app3")
"""The server names of haproxy.cfg, in the order of LGR_REPLICA_1..3."""


def _binary(name: str) -> str:
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))
    if found is None:
        raise RuntimeError(f"{name} is not installed: run scripts/install-deploy-tools")
    return found


def _stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


# ------------------------------------------------------------------------------- HAProxy


@dataclass(frozen=True)
class HaproxyLogLine:
    """One request of HAProxy's HTTP log (``option httplog``)."""

    server: str
    status: int
    termination: str
    """The session state at disconnection, e.g. ``----`` (normal), ``SH--`` (the server
    aborted before its response headers)."""
    retries: str
    """Connection retries; a ``+`` prefix means the request was redispatched to another
    server."""
    path: str


_HTTPLOG = re.compile(
    r"\] \S+ (?P<backend>[^/\s]+)/(?P<server>\S+) \S+ (?P<status>-?\d+) \S+ \S+ \S+ "
    r"(?P<term>\S{4}) \d+/\d+/\d+/\d+/(?P<retries>\+?\d+) \S+ "
    r'"[A-Z]+ (?P<path>\S+)'
)


class Haproxy:
    """``haproxy -db -f deploy/haproxy/haproxy.cfg`` with its addresses from the environment
    (the replicas, free ports for the frontend and the stats page, and a runtime API socket)."""

    def __init__(self, replicas: Sequence[str], workdir: Path) -> None:
        assert len(replicas) == len(HAPROXY_SERVERS)
        self.port = free_port()
        self.stats_port = free_port()
        self.socket = str(workdir / "admin.sock")
        self.stats_auth = ("stats", os.urandom(8).hex())
        self.log_path = workdir / "haproxy.log"
        self.env = {
            **os.environ,
            "LGR_BIND": f"127.0.0.1:{self.port}",
            "LGR_STATS_BIND": f"127.0.0.1:{self.stats_port}",
            "LGR_STATS_USER": self.stats_auth[0],
            "LGR_STATS_PASSWORD": self.stats_auth[1],
            "LGR_ADMIN_SOCKET": self.socket,
            **{f"LGR_REPLICA_{i + 1}": address for i, address in enumerate(replicas)},
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Haproxy:
        config = str(DEPLOY / "haproxy" / "haproxy.cfg")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [_binary("haproxy"), "-db", "-f", config],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_port(self.port)
        return self

    def stop(self) -> None:
        _stop(self.proc)

    def api(self, command: str) -> str:
        """One command of the runtime API (over the admin socket); its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(5)
            conn.connect(self.socket)
            conn.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def servers(self) -> dict[str, dict[str, str]]:
        """``show stat`` of the backend's servers: name -> column -> value."""
        lines = self.api(f"show stat {HAPROXY_BACKEND} 4 -1").strip().splitlines()
        header = lines[0].removeprefix("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:]]
        return {row["svname"]: row for row in rows}

    def wait_status(self, server: str, status: str, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while (now := self.servers()[server]["status"]) != status:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{server} is {now!r}, not {status!r}, after {timeout_s} s")
            time.sleep(0.05)

    def log(self) -> list[HaproxyLogLine]:
        """The requests HAProxy logged so far (health check lines are left out)."""
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            match = _HTTPLOG.search(line)
            if match and match["backend"] == HAPROXY_BACKEND:
                lines.append(
                    HaproxyLogLine(
                        server=match["server"],
                        status=int(match["status"]),
                        termination=match["term"],
                        retries=match["retries"],
                        path=match["path"],
                    )
                )
        return lines


class StatusWatch:
    """Polls HAProxy's ``show stat`` every ``interval_s`` in a thread and keeps each server's
    status changes with the monotonic time they were first seen."""

    def __init__(self, haproxy: Haproxy, interval_s: float = 0.02) -> None:
        self.haproxy = haproxy
        self.interval_s = interval_s
        self.changes: list[tuple[float, str, str]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StatusWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        last: dict[str, str] = {}
        while not self._done.is_set():
            now = time.monotonic()
            for name, row in self.haproxy.servers().items():
                if last.get(name) != row["status"]:
                    last[name] = row["status"]
                    self.changes.append((now, name, row["status"]))
            time.sleep(self.interval_s)

    def first(self, server: str, status: str, after: float) -> float | None:
        """When ``server`` was first seen in ``status`` after the time ``after``."""
        return next(
            (t for t, name, s in self.changes if name == server and s == status and t >= after),
            None,
        )


# --------------------------------------------------------------------------------- nginx


@dataclass(frozen=True)
class NginxLogLine:
    """One request of nginx's JSON access log."""

    status: int
    upstreams: tuple[str, ...]
    """Every replica tried, in order (more than one: passed to the next upstream)."""


_NGINX_ERROR = re.compile(
    r"\[error\] .*?: \*\d+ (?P<message>.*?), client: .*"
    r'request: "(?P<request>[^"]*)", upstream: "http://(?P<upstream>[^/"]+)'
)


@dataclass(frozen=True)
class NginxError:
    """One line of nginx's error log about a request to a replica."""

    message: str
    """What failed, e.g. ``upstream prematurely closed connection while reading upstream``."""
    request: str
    upstream: str


class Nginx:
    """nginx on a rendered copy of ``deploy/nginx/`` (ports and upstream addresses
    substituted), with a throwaway self-signed certificate for 127.0.0.1."""

    def __init__(self, replicas: Sequence[str], workdir: Path) -> None:
        self.http_port = free_port()
        self.port = free_port()
        # Its own directory, readable by nginx's unprivileged workers (pytest's is not).
        self.prefix = Path(tempfile.mkdtemp(prefix="lgr-nginx-", dir=workdir))
        self.prefix.chmod(0o755)
        self.conf = self.prefix / "conf"
        self.replicas = list(replicas)
        self.log_path = workdir / "nginx.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._render()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def certificate(self) -> str:
        return str(self.conf / "certs" / "tls.crt")

    def _render(self) -> None:
        shutil.copytree(DEPLOY / "nginx", self.conf)
        conf = self.conf / "nginx.conf"
        conf.write_text(
            _substitute(
                conf.read_text(),
                {
                    "listen 8080;": f"listen {self.http_port};",
                    "listen 8443 ssl http2;": f"listen {self.port} ssl http2;",
                    "https://$host:8443$request_uri": f"https://$host:{self.port}$request_uri",
                },
            )
        )
        self.write_upstreams(down=())
        certs = self.conf / "certs"
        certs.mkdir()
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(certs / "tls.key"), "-out", str(certs / "tls.crt")],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        (certs / "tls.key").chmod(0o644)  # read by the master only, but a throwaway anyway

    def write_upstreams(self, down: Sequence[str]) -> None:
        """``upstream.conf`` as committed, with the replicas' addresses, and ``down`` added to
        the lines of the replicas in ``down`` (the rolling-restart procedure)."""
        committed = (DEPLOY / "nginx" / "upstream.conf").read_text()
        lines = {
            f"server 127.0.0.1:{8001 + i} ": f"server {address} "
            for i, address in enumerate(self.replicas)
        }
        text = _substitute(committed, lines)
        for address in down:
            text, count = re.subn(
                rf"^(server {re.escape(address)} [^;]*);$", r"\1 down;", text, flags=re.M
            )
            assert count == 1, address
        (self.conf / "upstream.conf").write_text(text)

    def _command(self, *args: str) -> list[str]:
        return [_binary("nginx"), "-p", f"{self.prefix}/", "-c", str(self.conf / "nginx.conf"),
                "-e", "stderr", *args]  # fmt: skip

    def start(self) -> Nginx:
        subprocess.run(self._command("-t", "-q"), check=True, timeout=30)
        with self.log_path.open("ab") as log:
            # "daemon off" on the command line, as containers run nginx: the test is its parent.
            self.proc = subprocess.Popen(
                self._command("-g", "daemon off;"), stdout=log, stderr=subprocess.STDOUT
            )
        wait_port(self.port)
        return self

    def stop(self) -> None:
        _stop(self.proc, signal.SIGQUIT)  # graceful: let in-flight requests end

    def workers(self) -> dict[int, str]:
        """The master's children: pid -> title (``nginx: worker process``, or ``... is
        shutting down`` for a previous configuration's workers)."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        found = {}
        for pid in children.read_text().split():
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except FileNotFoundError:
                continue
            found[int(pid)] = title.decode().strip()
        return found

    def reload(self, timeout_s: float = 20.0) -> None:
        """Reload the configuration (SIGHUP) and wait until every worker that accepts new
        requests runs the new one: the previous workers only finish their requests."""
        before = {pid for pid, title in self.workers().items() if "worker process" in title}
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout_s
        while True:
            current = self.workers()
            serving = {p for p, t in current.items() if t.endswith("worker process")}
            if serving and not serving & before:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nginx did not reload in {timeout_s} s: {current}")
            time.sleep(0.02)

    def errors(self) -> list[NginxError]:
        """The error log's lines about requests to replicas (connection refused, a replica
        that closed the connection before its response ended, ...)."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            match = _NGINX_ERROR.search(line)
            if match:
                found.append(NginxError(match["message"], match["request"], match["upstream"]))
        return found

    def log(self) -> list[NginxLogLine]:
        """The access log's requests."""
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            entry = json.loads(line)
            lines.append(
                NginxLogLine(
                    status=int(entry["status"]),
                    upstreams=tuple(a.strip() for a in entry["upstream"].split(",") if a),
                )
            )
        return lines


def _substitute(text: str, replacements: dict[str, str]) -> str:
    """Replace each key once; a key that is not in the text exactly once is an error (the
    committed asset changed: update the rendering, never run an unrendered copy)."""
    for old, new in replacements.items():
        count = text.count(old)
        if count != 1:
            raise AssertionError(f"{old!r} appears {count} times in the committed asset")
        text = text.replace(old, new)
    return text
