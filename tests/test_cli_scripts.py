"""The two commands of a fresh clone: `scripts/demo` installs the package alone (no test
toolchain, no editable-install warning) and shares `.venv` with `scripts/test` in either order;
`scripts/testdb` (run by `scripts/test`) creates the database the tests use."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.servers import PostgresServer, running

ROOT = Path(__file__).resolve().parent.parent
CHECKOUT = ["pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "MANIFEST.in",
            "constraints.txt"]  # fmt: skip
WARNING_BOX = ("Editable installation", "BuildBackendWarning", "********")


def _script(checkout: Path, *args: str, env: dict[str, str] | None = None) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LANGGRAPH_", "VIRTUAL"))}
    result = subprocess.run(
        [str(checkout / "scripts" / args[0]), *args[1:]],
        cwd=checkout,
        env=clean | (env or {}),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the working tree's files the scripts use, with no .venv yet."""
    copy = tmp_path / "clone"
    copy.mkdir()
    for name in CHECKOUT:
        shutil.copy2(ROOT / name, copy / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("langgraph_resilient", "scripts", "tests"):
        shutil.copytree(ROOT / name, copy / name, ignore=ignore)
    return copy


def _has(checkout: Path, module: str) -> bool:
    probe = (
        f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({module!r}) else 1)"
    )
    python = checkout / ".venv" / "bin" / "python"
    return subprocess.run([python, "-c", probe], cwd="/", timeout=60).returncode == 0


def _editable(checkout: Path) -> bool:
    site = next((checkout / ".venv" / "lib").glob("python3*/site-packages"))
    return any(site.glob("__editable__*langgraph_resilient*"))


@pytest.mark.timeout(480)
def test_demo_installs_the_package_alone_and_shares_the_venv_with_the_tests(
    checkout: Path,
) -> None:
    first = _script(checkout, "demo")
    for text in WARNING_BOX:
        assert text not in first, f"{text!r} in the demo's output:\n{first}"
    assert "new thread 'demo'" in first and "published=['ticket-1']" in first
    assert _has(checkout, "langgraph_resilient") and not _editable(checkout)
    for tool in ("pytest", "mypy", "ruff", "hypothesis"):
        assert not _has(checkout, tool), f"the demo installed {tool}"

    again = _script(checkout, "demo")
    assert "pip" not in again.lower(), "a second demo installs nothing"
    assert "published=['ticket-1', 'ticket-2']" in again

    # The tests' set-up after the demo replaces the copy by an editable install (here without
    # the extras, which the suite's own .venv has: installing them again is minutes of pip).
    _script(checkout, "setup", env={"LGR_SETUP_EXTRAS": ""})
    assert _editable(checkout)
    # ... and a demo after the tests' set-up installs nothing and runs the live sources.
    (checkout / "langgraph_resilient" / "demo.py").touch()
    third = _script(checkout, "demo")
    assert "pip" not in third.lower()
    assert _editable(checkout)
    assert "published=['ticket-1', 'ticket-2', 'ticket-3']" in third


@pytest.fixture
def empty_postgres() -> Iterator[PostgresServer]:
    """A private Postgres as a fresh machine has it: only the `postgres` database."""
    server = PostgresServer()
    try:
        yield from running(server)
    finally:
        shutil.rmtree(server.root, ignore_errors=True)


def test_testdb_creates_the_test_database_once(empty_postgres: PostgresServer) -> None:
    url = empty_postgres.url.rsplit("/", 1)[0] + "/test"

    async def databases() -> set[str]:
        conn = await asyncpg.connect(empty_postgres.url)
        try:
            return {r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")}
        finally:
            await conn.close()

    assert "test" not in asyncio.run(databases())
    out = _script(ROOT, "testdb", env={"LGR_TEST_POSTGRES_URL": url})
    assert f"created database 'test' on 127.0.0.1:{empty_postgres.port}" in out
    assert "test" in asyncio.run(databases())
    assert _script(ROOT, "testdb", env={"LGR_TEST_POSTGRES_URL": url}) == ""
