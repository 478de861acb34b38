"""Bad input gets a typed error that says what to do, and nothing is written."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from langgraph_resilient import (
    ConfigurationError,
    InvalidConfigError,
    PayloadTooLargeError,
    ResilientSaver,
    SaverClosedError,
    SerializationError,
    TierUnavailableError,
)
from tests.conftest import SaverFactory
from tests.servers import RedisServer, running


def _config(thread_id: object = "t1", **extra: object) -> dict[str, object]:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": "", **extra}}


def _checkpoint(values: dict[str, object]) -> dict[str, object]:
    cp = dict(empty_checkpoint())
    cp["channel_values"] = values
    cp["channel_versions"] = {k: 1 for k in values}
    return cp


async def _count(saver: ResilientSaver) -> int:
    return len([t async for t in saver.alist(None)])


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"configurable": {}},
        {"configurable": {"thread_id": ""}},
        {"configurable": {"thread_id": {"nested": 1}}},
        {"configurable": {"thread_id": None}},
        {"configurable": {"thread_id": "t", "checkpoint_ns": 5}},
        "not a config",
    ],
)
async def test_invalid_config_is_refused_and_nothing_written(
    saver: ResilientSaver, config: object
) -> None:
    with pytest.raises(InvalidConfigError, match=r"thread_id|checkpoint_ns|RunnableConfig"):
        await saver.aput(config, _checkpoint({"a": 1}), {}, {"a": 1})  # type: ignore[arg-type]
    with pytest.raises(InvalidConfigError):
        await saver.aget_tuple(config)  # type: ignore[arg-type]
    assert await _count(saver) == 0


async def test_put_writes_needs_a_checkpoint_id(saver: ResilientSaver) -> None:
    with pytest.raises(InvalidConfigError, match="checkpoint_id"):
        await saver.aput_writes(_config(), [("a", 1)], "task")  # type: ignore[arg-type]


async def test_unserializable_value_is_refused_and_nothing_written(saver: ResilientSaver) -> None:
    lock = threading.Lock()
    with pytest.raises(SerializationError, match=r"channel 'bad'.*nothing was written"):
        await saver.aput(_config(), _checkpoint({"ok": 1, "bad": lock}), {}, {"ok": 1, "bad": 1})  # type: ignore[arg-type]
    assert await _count(saver) == 0
    stored = await saver.aput(_config(), _checkpoint({"ok": 1}), {}, {"ok": 1})  # type: ignore[arg-type]
    with pytest.raises(SerializationError, match="write to 'bad'"):
        await saver.aput_writes(stored, [("ok", 1), ("bad", lock)], "task")
    tup = await saver.aget_tuple(stored)
    assert tup is not None and tup.pending_writes == []


async def test_payload_over_the_limit_is_refused_and_nothing_written(
    make_saver: SaverFactory,
) -> None:
    saver = await make_saver(max_payload_bytes=4096)
    with pytest.raises(PayloadTooLargeError, match="max_payload_bytes=4096"):
        await saver.aput(_config(), _checkpoint({"big": "x" * 10_000}), {}, {"big": 1})  # type: ignore[arg-type]
    assert await _count(saver) == 0
    stored = await saver.aput(_config(), _checkpoint({"small": "x"}), {}, {"small": 1})  # type: ignore[arg-type]
    with pytest.raises(PayloadTooLargeError):
        await saver.aput_writes(stored, [("big", "y" * 10_000)], "task")
    tup = await saver.aget_tuple(stored)
    assert tup is not None and tup.pending_writes == []


async def test_unknown_prune_strategy(saver: ResilientSaver) -> None:
    with pytest.raises(ConfigurationError, match="keep_latest"):
        await saver.aprune(["t1"], strategy="everything")


async def test_list_rejects_bad_limit(saver: ResilientSaver) -> None:
    with pytest.raises(ConfigurationError, match="limit"):
        [t async for t in saver.alist(None, limit=-1)]


def test_malformed_urls_and_settings_fail_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="postgresql://"):
        ResilientSaver.from_urls(postgres_url="mysql://localhost/db")
    with pytest.raises(ConfigurationError, match="not both"):
        ResilientSaver.from_urls(postgres_url="postgresql://x/y", sqlite_path="a.db")
    with pytest.raises(ConfigurationError, match="prefix"):
        ResilientSaver.from_urls(sqlite_path="a.db", prefix="Bad-Prefix")
    with pytest.raises(ConfigurationError, match="pool"):
        ResilientSaver.from_urls(postgres_url="postgresql://x/y", pool_min_size=5, pool_max_size=2)


async def test_unreachable_postgres_fails_fast_naming_the_tier() -> None:
    saver = ResilientSaver.from_urls(
        postgres_url="postgresql://postgres:secret@127.0.0.1:1/test", connect_timeout_s=1.0
    )
    with pytest.raises(TierUnavailableError, match=r"^postgres: cannot connect") as info:
        await saver.__aenter__()
    assert "secret" not in str(info.value)
    assert info.value.tier == "postgres"


async def test_wrong_database_fails_fast() -> None:
    saver = ResilientSaver.from_urls(
        postgres_url="postgresql://postgres@127.0.0.1:5432/no_such_database_here"
    )
    with pytest.raises(TierUnavailableError, match="no_such_database_here"):
        await saver.__aenter__()


def test_unwritable_sqlite_path_fails_fast(tmp_path: object) -> None:
    saver = ResilientSaver.from_urls(sqlite_path="/proc/no/such/dir/state.db")
    with pytest.raises(TierUnavailableError, match=r"^sqlite"):
        saver.__enter__()


async def test_using_a_saver_that_was_never_entered() -> None:
    saver = ResilientSaver.from_urls(sqlite_path="never-opened.db")
    with pytest.raises(SaverClosedError, match="async with"):
        await saver.aget_tuple(_config())  # type: ignore[arg-type]
    with pytest.raises(SaverClosedError):
        saver.get_tuple(_config())  # type: ignore[arg-type]


async def test_redis_url_problems(make_saver: SaverFactory, backend: str) -> None:
    with pytest.raises(ConfigurationError, match="redis_url"):
        ResilientSaver.from_urls(sqlite_path="a.db", redis_url="http://127.0.0.1:6379")
    if backend != "postgres":
        return
    with pytest.raises(TierUnavailableError, match=r"^redis: cannot connect"):
        await make_saver(redis_url="redis://127.0.0.1:1/0", redis_required=True)
    # by default a replica starts without Redis and works on the durable tier alone
    saver = await make_saver(redis_url="redis://127.0.0.1:1/0")
    config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    stored = await saver.aput(config, _checkpoint({"a": 1}), {}, {"a": 1})  # type: ignore[arg-type]
    tup = await saver.aget_tuple(stored)
    assert tup is not None and tup.checkpoint["channel_values"] == {"a": 1}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"postgres_url": ""}, r"^postgres_url is empty"),
        ({"postgres_url": "   "}, r"^postgres_url is empty"),
        ({"redis_url": ""}, r"^redis_url is empty"),
        ({"sqlite_path": ""}, r"^sqlite_path is empty"),
        (
            {"postgres_url": "postgresql://app:s3cret@[::1/db"},
            r"postgres_url 'postgresql://app:\*\*\*@\[::1/db' is malformed \(Invalid IPv6 URL\)",
        ),
        (
            {"postgres_url": "postgresql://app:s3cret@db:54x2/db"},
            r"port '54x2' of host 'db' is not a number",
        ),
        (
            {"redis_url": "redis://:s3cret@[::1]:99999/0"},
            r"redis_url 'redis://:\*\*\*@\[::1\]:99999/0': port '99999'",
        ),
        (
            {"redis_url": "redis+sentinel://s1:26379,s2:2637x/mymaster"},
            r"port '2637x' of host 's2'",
        ),
        ({"redis_url": "redis://[::1:6379/0"}, r"redis_url .* is malformed"),
    ],
)
def test_empty_and_malformed_urls_name_the_setting_and_mask_the_password(
    kwargs: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as raised:
        ResilientSaver.from_urls(**kwargs)  # type: ignore[arg-type]
    assert "s3cret" not in str(raised.value)


def test_redis_in_front_of_sqlite_is_built(tmp_path: object) -> None:
    saver = ResilientSaver.from_urls(sqlite_path="x.db", redis_url="redis://127.0.0.1:6379/0")
    assert saver.store.tier_name == "sqlite" and saver.redis_settings is not None


async def test_a_postgres_black_hole_names_the_limit_that_expired() -> None:
    """A listening socket that never answers: the error says which time limit expired."""
    import socket

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    port = hole.getsockname()[1]
    try:
        saver = ResilientSaver.from_urls(
            postgres_url=f"postgresql://postgres:pw@127.0.0.1:{port}/db", connect_timeout_s=0.3
        )
        with pytest.raises(TierUnavailableError, match=r"connect_timeout_s=0\.3s") as raised:
            await saver.__aenter__()
        assert "pw@" not in str(raised.value)
    finally:
        hole.close()


async def test_a_redis_that_refuses_the_password_says_so(fresh_redis_with_password: str) -> None:
    saver = ResilientSaver.from_urls(
        sqlite_path=":memory:", redis_url=fresh_redis_with_password, redis_required=True
    )
    with pytest.raises(TierUnavailableError, match="refused the credentials") as raised:
        await saver.__aenter__()
    assert "wrong-password" not in str(raised.value)


@pytest.fixture
def fresh_redis_with_password() -> Iterator[str]:
    """A private Redis that wants a password, and a URL with the wrong one."""
    for server in running(RedisServer("--requirepass", "right-password")):
        yield f"redis://:wrong-password@127.0.0.1:{server.port}/0"
