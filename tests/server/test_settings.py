"""``serve --pool-max-size``: from the flag (or its variable) to the saver's Postgres pool, and
refused when it is not a positive number."""

from __future__ import annotations

import argparse

import pytest

from langgraph_resilient.errors import ConfigurationError
from langgraph_resilient.server.cli import add_serve_arguments, settings_from_args
from langgraph_resilient.server.context import ServerContext
from langgraph_resilient.server.settings import ServerSettings
from tests.conftest import POSTGRES_URL, drop_backend, unique_prefix
from tests.server.conftest import ROOT

CHAIN = f"chain={ROOT / 'examples' / 'server' / 'graph.py'}:chain"


def _settings(*flags: str, prefix: str = "lgr_") -> ServerSettings:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["--graph", CHAIN, *flags])
    return settings_from_args(
        args, postgres_url=POSTGRES_URL, redis_url=None, sqlite_path=None, prefix=prefix
    )


def test_pool_max_size_from_the_flag_and_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _settings().pool_max_size == 10  # the saver's own default
    assert _settings("--pool-max-size", "4").pool_max_size == 4
    monkeypatch.setenv("LANGGRAPH_RESILIENT_POOL_MAX_SIZE", "6")
    assert _settings().pool_max_size == 6
    for bad in ("0", "-2"):
        with pytest.raises(ConfigurationError, match="pool_max_size must be > 0"):
            _settings("--pool-max-size", bad)


async def test_pool_max_size_reaches_the_saver() -> None:
    prefix = unique_prefix()
    ctx = ServerContext(_settings("--pool-max-size", "4", prefix=prefix), handle_sigterm=False)
    try:
        await ctx.start()
        assert ctx.saver is not None
        store = ctx.saver.store
        # 4 connections: one writer and three readers.
        assert store.write_parallelism == 1
        assert store.pool.get_max_size() == 3
    finally:
        await ctx.stop()
        await drop_backend("postgres", prefix)
