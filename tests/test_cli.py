"""The `langgraph-resilient` command's habits: --version, python -m, a --help that imports no
LangGraph, connection flags that are used or refused (never silently dropped), and prune's
messages."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from langgraph_resilient import ResilientSaver, __version__, cli
from langgraph_resilient.cli import main, parse_age
from tests.checkpoint.durable.aging import age_thread, put_checkpoints
from tests.conftest import REDIS_URL, drop_prefixed_keys, unique_prefix


def _run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LANGGRAPH_RESILIENT_")}
    return subprocess.run(
        [sys.executable, *args],
        env=clean | (env or {}),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_version_from_the_command_and_from_python_m() -> None:
    for args in (
        ["-m", "langgraph_resilient", "--version"],
        ["-m", "langgraph_resilient.cli", "--version"],
    ):
        result = _run(*args)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"langgraph-resilient {__version__}"


def test_python_m_runs_the_command() -> None:
    result = _run("-m", "langgraph_resilient", "--help")
    assert result.returncode == 0, result.stderr
    for command in cli.COMMANDS:
        assert command.name in result.stdout


def test_help_imports_neither_langgraph_nor_the_saver() -> None:
    probe = (
        "import sys\n"
        "from langgraph_resilient.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('langgraph', 'langchain_core', 'asyncpg', 'redis') or "
        "m.startswith('langgraph_resilient.checkpoint'))\n"
        "print('HEAVY', heavy)\n"
    )
    result = _run("-c", probe)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout


def test_the_package_exports_every_public_name_lazily() -> None:
    import langgraph_resilient

    for name in langgraph_resilient.__all__:
        assert getattr(langgraph_resilient, name) is not None, name
    assert set(langgraph_resilient.__all__) <= set(dir(langgraph_resilient))
    with pytest.raises(AttributeError):
        _ = langgraph_resilient.NoSuchName  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", ["demo", "doctor", "migrate"])
def test_an_empty_postgres_url_flag_is_an_error(
    command: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([command, "--postgres-url", ""]) == 2
    err = capsys.readouterr().err
    assert "--postgres-url is empty" in err
    assert list(tmp_path.iterdir()) == [], "nothing is written for a refused command"


def test_an_empty_environment_variable_is_an_error(tmp_path: Path) -> None:
    for name in ("LANGGRAPH_RESILIENT_POSTGRES_URL", "LANGGRAPH_RESILIENT_REDIS_URL"):
        result = _run("-m", "langgraph_resilient", "doctor", env={name: ""}, cwd=tmp_path)
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"{name} is set but empty" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_postgres_and_sqlite_flags_together_are_an_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "postgresql://postgres@127.0.0.1:5432/test"
    assert main(["doctor", "--postgres-url", url, "--sqlite-path", "x.db"]) == 2
    assert "not both" in capsys.readouterr().err


def test_redis_url_without_postgres_puts_redis_in_front_of_sqlite(tmp_path: Path) -> None:
    prefix = unique_prefix()
    try:
        result = _run(
            "-m", "langgraph_resilient", "demo", "--redis-url", REDIS_URL, "--prefix", prefix,
            cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        db = tmp_path / "langgraph_state.db"
        assert f"durable tier: sqlite {db} + redis {REDIS_URL}" in result.stdout
        assert "published=['ticket-1']" in result.stdout
        client = redis.Redis.from_url(REDIS_URL)
        try:
            assert list(client.scan_iter(match=f"{prefix}*", count=1000)), "Redis was used"
        finally:
            client.close()
    finally:
        asyncio.run(drop_prefixed_keys(REDIS_URL, prefix))


def test_urls_are_printed_with_passwords_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "state.db")
    assert main(["migrate", "--sqlite-path", db]) == 0
    main(["doctor", "--sqlite-path", db, "--redis-url", "redis://:hunter2@127.0.0.1:1/0"])
    out = capsys.readouterr().out
    assert "redis://:***@127.0.0.1:1/0" in out and "hunter2" not in out


# ------------------------------------------------------------------------------ prune


@pytest.mark.parametrize(
    ("text", "age", "shown"),
    [
        ("30d", timedelta(days=30), "30 days"),
        ("1d", timedelta(days=1), "1 day"),
        ("2w", timedelta(weeks=2), "2 weeks"),
        ("12h", timedelta(hours=12), "12 hours"),
        ("1.5d", timedelta(hours=36), "36 hours"),
        ("90m", timedelta(minutes=90), "90 minutes"),
        ("45s", timedelta(seconds=45), "45 seconds"),
        ("2.5s", timedelta(seconds=2.5), "2.5 seconds"),
        ("7D", timedelta(days=7), "1 week"),
    ],
)
def test_ages_parse_and_print_as_people_write_them(text: str, age: timedelta, shown: str) -> None:
    assert parse_age(text) == age
    assert cli.describe_age(age) == shown


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-5d", "'-5d' is negative"),
        ("0d", "'0d' is not more than zero"),
        ("0s", "'0s' is not more than zero"),
        ("abc", "'abc' is not an age"),
        ("30", "'30' is not an age"),
        ("d", "'d' is not an age"),
    ],
)
def test_bad_ages_give_a_clear_message(
    text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["prune", f"--older-than={text}"])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_batch_size_gives_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["prune", "--older-than", "30d", "--batch-size", "0"])
    assert "'0' must be at least 1" in capsys.readouterr().err


def test_prune_says_what_it_did(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "state.db")

    async def seed() -> None:
        async with ResilientSaver.from_urls(sqlite_path=db) as saver:
            for thread_id in ("old-1", "old-2", "old-3", "fresh"):
                await put_checkpoints(saver, thread_id)
            for thread_id in ("old-1", "old-2", "old-3"):
                await age_thread(saver, "sqlite", thread_id, days=40)

    asyncio.run(seed())
    prune = ["prune", "--sqlite-path", db, "--older-than"]
    capsys.readouterr()
    assert main([*prune, "30d", "--strategy", "keep_latest"]) == 0
    assert capsys.readouterr().out.strip() == (
        f"sqlite {db}: pruned 3 thread(s) idle for more than 30 days "
        "(kept only their newest checkpoints)"
    )
    assert main([*prune, "30d"]) == 0
    assert capsys.readouterr().out.strip() == (
        f"sqlite {db}: pruned 3 thread(s) idle for more than 30 days (deleted)"
    )
    assert main([*prune, "30d"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == f"sqlite {db}: pruned 0 thread(s) idle for more than 30 days"
    assert "0:00:00" not in out
