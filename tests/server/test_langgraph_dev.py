"""The plug in the official LangGraph Server: ``langgraph dev`` (the in-memory runtime) with
``langgraph_resilient.langgraph_server:checkpointer`` on Postgres + Redis, driven by
langgraph-sdk, restarted, and every thread read back from the saver."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from langgraph_resilient import ResilientSaver
from tests.conftest import POSTGRES_URL, REDIS_URL, drop_backend, unique_prefix
from tests.server.conftest import ROOT, sdk
from tests.servers import free_port

pytestmark = pytest.mark.timeout(240)
LANGGRAPH = str(Path(os.sys.executable).parent / "langgraph")


def _project(tmp: Path) -> Path:
    config = {
        "dependencies": ["."],
        "graphs": {
            "support": str(ROOT / "examples" / "server" / "graph.py") + ":support",
            "slow": str(ROOT / "tests" / "server" / "graphs.py") + ":slow",
        },
        "checkpointer": {
            "backend": "custom",
            "path": "langgraph_resilient.langgraph_server:checkpointer",
        },
        "env": {},
    }
    (tmp / "langgraph.json").write_text(json.dumps(config))
    return tmp


class LanggraphDev:
    def __init__(self, project: Path, prefix: str) -> None:
        self.project = project
        self.port = free_port()
        self.env = {
            **os.environ,
            "LANGGRAPH_RESILIENT_POSTGRES_URL": POSTGRES_URL,
            "LANGGRAPH_RESILIENT_REDIS_URL": REDIS_URL,
            "LANGGRAPH_RESILIENT_PREFIX": prefix,
            "LANGSMITH_TRACING": "false",
            "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LanggraphDev:
        log = (self.project / "dev.log").open("ab")
        self.proc = subprocess.Popen(
            [
                LANGGRAPH,
                "dev",
                "--config",
                "langgraph.json",
                "--port",
                str(self.port),
                "--host",
                "127.0.0.1",
                "--no-browser",
                "--no-reload",
            ],
            cwd=self.project,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.project / "dev.log").read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/ok", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError((self.project / "dev.log").read_text()[-3000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def test_langgraph_dev_with_the_plug(tmp_path: Path) -> None:
    prefix = unique_prefix()
    project = _project(tmp_path)
    dev = LanggraphDev(project, prefix).start()
    try:
        client = sdk(dev.url)
        paused = await client.threads.create()
        result = await client.runs.wait(paused["thread_id"], "support", input={"question": "q"})
        assert result["__interrupt__"][0]["value"]["question"] == "Publish this answer?"
        resumed = await client.runs.wait(paused["thread_id"], "support", command={"resume": True})
        assert resumed["published"] is True
        threads = [(await client.threads.create())["thread_id"] for _ in range(4)]
        outs = await asyncio.gather(
            *(client.runs.wait(t, "slow", input={"delay": 0.05}) for t in threads)
        )
        assert all(o["log"] == ["first", "second", "third"] for o in outs)
    finally:
        dev.stop()
    try:
        # Every thread is in the saver, as another process reads it.
        async with ResilientSaver.from_urls(
            postgres_url=POSTGRES_URL, redis_url=REDIS_URL, prefix=prefix
        ) as saver:
            for thread_id in [paused["thread_id"], *threads]:
                head = await saver.aget_tuple({"configurable": {"thread_id": thread_id}})
                assert head is not None
        # A restarted server (its threads and runs were in memory) serves the checkpoints.
        dev = LanggraphDev(project, prefix).start()
        client = sdk(dev.url)
        for thread_id in threads:
            await client.threads.create(thread_id=thread_id, if_exists="do_nothing")
            await client.threads.update(thread_id, metadata={"graph_id": "slow"})
            state = await client.threads.get_state(thread_id)
            assert state["values"]["log"] == ["first", "second", "third"]
        await client.threads.create(thread_id=paused["thread_id"], if_exists="do_nothing")
        await client.threads.update(paused["thread_id"], metadata={"graph_id": "support"})
        assert (await client.threads.get_state(paused["thread_id"]))["values"]["published"] is True
        again = await client.runs.wait(threads[0], "slow", input={"delay": 0})
        assert again["log"] == ["first", "second", "third"] * 2
    finally:
        dev.stop()
        await drop_backend("tiered", prefix)
