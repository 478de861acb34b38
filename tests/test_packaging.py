"""Packaging: `python -m build` gives an sdist and a wheel that `twine check` accepts, and both
install in a clean virtualenv (no test dependencies) where the package imports, the command
prints its version and the demo runs on SQLite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from langgraph_resilient import __version__

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "MANIFEST.in"]


def _run(*args: str | Path, cwd: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGGRAPH_", "VIRTUAL_ENV"))}
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.mark.timeout(300)
def test_build_check_install_and_smoke_test(tmp_path: Path) -> None:
    # Build from a copy of the working tree, so that the build leaves nothing in the checkout.
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "langgraph_resilient",
        src / "langgraph_resilient",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    dist = tmp_path / "dist"
    _run(sys.executable, "-m", "build", "--outdir", dist, src)
    wheel = dist / f"langgraph_resilient-{__version__}-py3-none-any.whl"
    sdist = dist / f"langgraph_resilient-{__version__}.tar.gz"
    assert sorted(dist.iterdir()) == sorted([wheel, sdist])
    assert "PASSED" in _run(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist)

    with zipfile.ZipFile(wheel) as archive:
        info = f"langgraph_resilient-{__version__}.dist-info"
        metadata = archive.read(f"{info}/METADATA").decode()
        names = set(archive.namelist())
    assert "License-Expression: MIT" in metadata
    assert "Project-URL: Changelog" in metadata and "Classifier: Typing :: Typed" in metadata
    assert f"{info}/licenses/LICENSE" in names
    assert "langgraph_resilient/py.typed" in names and "langgraph_resilient/__main__.py" in names

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    python, command = venv / "bin" / "python", venv / "bin" / "langgraph-resilient"
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run(*pip, "-c", ROOT / "constraints.txt", wheel)
    workdir = tmp_path / "work"
    workdir.mkdir()

    def smoke(expected: str) -> None:
        _run(python, "-c", "import langgraph_resilient as l; l.ResilientSaver; l.with_resilience")
        absent = "import importlib.util as u; assert not any(u.find_spec(m) for m in "
        absent += "('pytest', 'mypy', 'ruff', 'hypothesis'))"
        _run(python, "-c", absent)
        assert _run(command, "--version").strip() == f"langgraph-resilient {__version__}"
        out = _run(command, "demo", cwd=workdir)
        assert f"durable tier: sqlite {workdir / 'langgraph_state.db'}" in out
        assert expected in out, out

    smoke("published=['ticket-1']")
    _run(*pip, "--no-deps", "--force-reinstall", sdist)
    smoke("published=['ticket-1', 'ticket-2']")  # the sdist's install continues the thread
