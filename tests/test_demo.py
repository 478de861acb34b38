"""The main job: `langgraph-resilient demo` pauses, resumes after a reopen, and a second run
continues the stored thread (embedded default and Postgres)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    POSTGRES_URL,
    REDIS_URL,
    drop_prefixed_keys,
    drop_prefixed_tables,
    unique_prefix,
)
from tests.server.conftest import ServeProcess
from tests.servers import PostgresServer, RedisServer, running

ROOT = Path(__file__).resolve().parent.parent


def _demo(cwd: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANGGRAPH_RESILIENT_")}
    result = subprocess.run(
        [sys.executable, "-m", "langgraph_resilient.cli", "demo", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_demo_on_the_embedded_default_resumes_across_runs(tmp_path: Path) -> None:
    first = _demo(tmp_path)
    assert f"sqlite {tmp_path / 'langgraph_state.db'}" in first
    assert "new thread 'demo'" in first
    assert "paused at ('review',)" in first
    assert "published=['ticket-1']" in first
    second = _demo(tmp_path)
    assert "resuming stored thread 'demo': 1 ticket(s) done" in second
    assert "published=['ticket-1', 'ticket-2']" in second


def test_demo_on_postgres_and_redis(tmp_path: Path) -> None:
    prefix = unique_prefix()
    urls = ["--postgres-url", POSTGRES_URL, "--redis-url", REDIS_URL, "--prefix", prefix]
    try:
        out = _demo(tmp_path, *urls)
        assert "durable tier: postgres" in out and "+ redis" in out
        assert "published=['ticket-1']" in out
        again = _demo(tmp_path, *urls)
        assert "published=['ticket-1', 'ticket-2']" in again
        on_postgres_alone = _demo(tmp_path, *urls[:2], *urls[4:])
        assert "published=['ticket-1', 'ticket-2', 'ticket-3']" in on_postgres_alone
        assert not (tmp_path / "langgraph_state.db").exists()
    finally:
        asyncio.run(drop_prefixed_tables(POSTGRES_URL, prefix))
        asyncio.run(drop_prefixed_keys(REDIS_URL, prefix))


EXAMPLES = sorted(p.name for p in (Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("script", EXAMPLES)
def test_examples_run(script: str, backend: str, tmp_path: Path) -> None:
    """Every program in examples/ runs to completion, on each backend (they are documentation).
    The Redis URL is given to all of them; those about Redis use it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANGGRAPH_RESILIENT_")}
    prefix = unique_prefix()
    env |= {"LANGGRAPH_RESILIENT_PREFIX": prefix, "LANGGRAPH_RESILIENT_REDIS_URL": REDIS_URL}
    if backend == "postgres":
        env["LANGGRAPH_RESILIENT_POSTGRES_URL"] = POSTGRES_URL
    try:
        result = subprocess.run(
            [sys.executable, str(Path(__file__).parent.parent / "examples" / script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        asyncio.run(drop_prefixed_tables(POSTGRES_URL, prefix))
        asyncio.run(drop_prefixed_keys(REDIS_URL, prefix))


# ------------------------------------------------------------------- README quick starts

README_PG = "postgresql://app:secret@db:5432/app?sslmode=require"
README_REDIS = "redis://cache:6379/0"
README_SERVER = "http://127.0.0.1:8123"
SNIPPET_PRELUDE = """\
import operator
from typing import Annotated, TypedDict

from langgraph.graph import END, START, StateGraph


class State(TypedDict):
    log: Annotated[list[str], operator.add]


builder = StateGraph(State)
builder.add_node("step", lambda state: {"log": ["step"]})
builder.add_edge(START, "step")
builder.add_edge("step", END)
inputs = {"log": ["in"]}
saver = None  # what Quick start 2 compiles with: the saver of Quick start 1
"""


def quick_start_snippets() -> list[str]:
    """The python blocks of README's quick-start sections, in order."""
    text = (ROOT / "README.md").read_text()
    sections = re.split(r"^## ", text, flags=re.M)
    blocks = []
    for section in sections:
        if section.startswith("Quick start") and "benchmarks" not in section.splitlines()[0]:
            blocks += re.findall(r"^```python\n(.*?)^```", section, flags=re.M | re.S)
    return blocks


@pytest.fixture(scope="module")
def readme_servers() -> Iterator[tuple[str, str]]:
    """A private Postgres and Redis for the snippets, which use the default prefix."""
    for postgres in running(PostgresServer()):
        for redis_server in running(RedisServer()):
            yield postgres.url, redis_server.url


@pytest.mark.parametrize("index", range(len(quick_start_snippets())))
def test_readme_quick_start_snippets_run_as_written(
    index: int, readme_servers: tuple[str, str], tmp_path: Path
) -> None:
    """Each block runs as a program (given `builder` and `inputs`); only its server URLs are
    swapped for private servers' (the README's hosts do not exist here)."""
    snippet = quick_start_snippets()[index]
    if "postgresql://" in snippet:
        assert README_PG in snippet and README_REDIS in snippet, "the README's URLs changed"
    program = SNIPPET_PRELUDE + snippet.replace(README_PG, readme_servers[0]).replace(
        README_REDIS, readme_servers[1]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANGGRAPH_RESILIENT_")}
    with contextlib.ExitStack() as stack:
        if README_SERVER in snippet:
            # The client snippet of "serving graphs" talks to the server its bash block starts.
            server = ServeProcess(
                "--sqlite-path", str(tmp_path / "served.db"), log=tmp_path / "serve.log"
            )
            stack.callback(server.stop)
            program = program.replace(README_SERVER, server.start().url)
        result = subprocess.run(
            [sys.executable, "-c", program],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, f"{snippet}\n{result.stdout}\n{result.stderr}"


def test_readme_has_the_quick_start_snippets() -> None:
    snippets = quick_start_snippets()
    assert len(snippets) == 6
    assert "lock_thread" in snippets[0] and "asyncio.run(main())" in snippets[0]
