"""Real server processes for the server tests: ``langgraph-resilient serve`` on free ports."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import POSTGRES_URL, REDIS_URL, drop_backend, unique_prefix
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = str(ROOT / "examples" / "server" / "langgraph.json")
TEST_GRAPHS = ["--graph", "slow=tests/server/graphs.py:slow"]


class ServeProcess:
    """``langgraph-resilient serve`` as a child process of the test, on a free port."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, log: Path) -> None:
        self.port = free_port()
        self.args = ["--config", EXAMPLE_CONFIG, *TEST_GRAPHS, "--port", str(self.port), *args]
        self.env = {**os.environ, **(env or {})}
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> ServeProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "langgraph_resilient.cli", "serve", *self.args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not answer in {timeout_s} s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def sigterm(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.sigterm()
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def backend_args(backend: str, prefix: str, tmp: Path) -> list[str]:
    """``serve`` flags that put the server on ``backend`` (sqlite, or tiered: Postgres+Redis)."""
    if backend == "sqlite":
        return ["--sqlite-path", str(tmp / "state.db"), "--prefix", prefix]
    return ["--postgres-url", POSTGRES_URL, "--redis-url", REDIS_URL, "--prefix", prefix]


def serving(
    backend: str, tmp: Path, *extra: str, env: dict[str, str] | None = None, count: int = 1
) -> Iterator[list[ServeProcess]]:
    """``count`` servers on one backend and prefix; stopped and dropped afterwards."""
    prefix = unique_prefix()
    servers: list[ServeProcess] = []
    try:
        for i in range(count):
            server = ServeProcess(
                *backend_args(backend, prefix, tmp), *extra, env=env, log=tmp / f"serve{i}.log"
            )
            servers.append(server.start())
        yield servers
    finally:
        for server in servers:
            server.stop()
        asyncio.run(drop_backend("sqlite" if backend == "sqlite" else "tiered", prefix))


@pytest.fixture(scope="module", params=["sqlite", "tiered"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    """One server for the module, on the embedded default and on Postgres + Redis."""
    tmp = tmp_path_factory.mktemp(f"serve-{request.param}")
    for servers in serving(str(request.param), tmp):
        yield servers[0]


def sdk(url: str, **kwargs: Any) -> Any:
    """The real langgraph-sdk async client."""
    from langgraph_sdk import get_client

    return get_client(url=url, api_key=kwargs.pop("api_key", None), **kwargs)
