"""The main job: `langgraph-resilient demo` pauses, resumes after a reopen, and a second run
continues the stored thread (embedded default and Postgres)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import (
    POSTGRES_URL,
    REDIS_URL,
    drop_prefixed_keys,
    drop_prefixed_tables,
    unique_prefix,
)


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
