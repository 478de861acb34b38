"""Compression of stored values: on every tier, readable whichever way a value was written,
never of ciphertext, and it really shrinks what Postgres stores."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

import asyncpg
import ormsgpack
import pytest
import redis.asyncio
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.graph import START, StateGraph

from langgraph_resilient import ConfigurationError, ResilientSaver, SerializationError
from langgraph_resilient.checkpoint.codec import load
from langgraph_resilient.checkpoint.compression import compress
from tests.conftest import (
    POSTGRES_URL,
    REDIS_URL,
    SaverFactory,
    drop_prefixed_tables,
    unique_prefix,
)

LINE = "The quarterly report shows revenue up 4% and three risks the board should weigh. "


class Chat(TypedDict):
    messages: Annotated[list[str], operator.add]


def _chat() -> Any:
    def reply(state: Chat) -> dict[str, Any]:
        return {"messages": [f"answer {len(state['messages'])}: " + LINE * 12]}

    graph = StateGraph(Chat)
    graph.add_node("reply", reply)
    graph.add_edge(START, "reply")
    return graph


async def _turns(saver: ResilientSaver, thread_id: str, turns: int) -> list[str]:
    graph = _chat().compile(checkpointer=saver)
    config: Any = {"configurable": {"thread_id": thread_id}}
    state: dict[str, Any] = {}
    for turn in range(turns):
        state = await graph.ainvoke({"messages": [f"question {turn}: " + LINE * 12]}, config)
    return list(state["messages"])


async def test_values_are_read_back_whichever_way_they_were_written(
    make_saver: SaverFactory,
) -> None:
    on = await make_saver(compression="zstd", compression_min_bytes=256)
    written = await _turns(on, "t", 3)
    off = await make_saver()
    graph = _chat().compile(checkpointer=off)
    config: Any = {"configurable": {"thread_id": "t"}}
    assert (await graph.aget_state(config)).values["messages"] == written
    more = await _turns(off, "t", 1)  # written uncompressed on top of compressed history
    assert (await _chat().compile(checkpointer=on).aget_state(config)).values["messages"] == more
    history = [s async for s in graph.aget_state_history(config)]
    assert len(history) == 4 * 3  # 3 checkpoints a turn
    assert history[0].values["messages"] == more and history[-1].values == {"messages": []}


async def _stored_types(prefix: str) -> dict[str, int]:
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        rows = await conn.fetch(
            f"SELECT type, count(*) AS n FROM {prefix}blobs GROUP BY type "
            f"UNION ALL SELECT type, count(*) FROM {prefix}writes GROUP BY type"
        )
    finally:
        await conn.close()
    types: dict[str, int] = {}
    for row in rows:
        types[row["type"]] = types.get(row["type"], 0) + row["n"]
    return types


async def _stored_bytes(prefix: str) -> int:
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        total = await conn.fetchval(
            f"SELECT (SELECT coalesce(sum(octet_length(blob)), 0) FROM {prefix}blobs)"
            f" + (SELECT coalesce(sum(octet_length(blob)), 0) FROM {prefix}writes)"
            f" + (SELECT sum(octet_length(body)) FROM {prefix}checkpoints)"
        )
    finally:
        await conn.close()
    return int(total)


@pytest.mark.parametrize("backend", ["postgres"])
async def test_compression_shrinks_what_postgres_stores(make_saver: SaverFactory) -> None:
    plain = await make_saver(prefix=unique_prefix())
    packed = await make_saver(prefix=unique_prefix(), compression="zstd")
    try:
        assert await _turns(plain, "t", 8) == await _turns(packed, "t", 8)
        types = await _stored_types(packed.settings.prefix)
        assert any(t.startswith("zstd:") for t in types), types
        assert any(not t.startswith("zstd:") for t in types), "small values stay as they are"
        assert not any(t.startswith("zstd:") for t in await _stored_types(plain.settings.prefix))
        on, off = [await _stored_bytes(s.settings.prefix) for s in (packed, plain)]
        assert on <= 0.5 * off, f"compressed {on} bytes, plain {off}"
    finally:
        for saver in (plain, packed):
            await drop_prefixed_tables(POSTGRES_URL, saver.settings.prefix)


@pytest.mark.parametrize("backend", ["tiered"])
async def test_redis_and_the_local_cache_hold_the_compressed_form(
    make_saver: SaverFactory,
) -> None:
    saver = await make_saver(compression="zstd", compression_min_bytes=256)
    written = await _turns(saver, "t", 3)
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        types = []
        async for key in client.scan_iter(match=f"{saver.settings.prefix}{{t}}:*:b:*"):
            value = await client.get(key)
            assert value is not None and value.startswith(b"LGR1")
            types.append(ormsgpack.unpackb(value[4:])[0])
    finally:
        await client.aclose()
    assert any(t.startswith("zstd:") for t in types), types
    reader = await make_saver()  # compression off, served from Redis
    graph = _chat().compile(checkpointer=reader)
    assert (await graph.aget_state({"configurable": {"thread_id": "t"}})).values[
        "messages"
    ] == written


async def test_ciphertext_is_not_compressed(make_saver: SaverFactory) -> None:
    serde = EncryptedSerializer.from_pycryptodome_aes(key=b"0123456789abcdef")
    saver = await make_saver(serde=serde, compression="zstd", compression_min_bytes=64)
    written = await _turns(saver, "t", 2)
    tup = await saver.aget_tuple({"configurable": {"thread_id": "t"}})
    assert tup is not None and tup.checkpoint["channel_values"]["messages"] == written
    typ, data = serde.dumps_typed(written)
    assert compress((typ, data), 64) == (typ, data), "encrypted: stored as the serde made it"


async def test_a_damaged_compressed_value_is_a_serialization_error(
    make_saver: SaverFactory,
) -> None:
    saver = await make_saver(compression="zstd", compression_min_bytes=64)
    with pytest.raises(SerializationError, match="does not decompress"):
        load(saver.serde, ("zstd:msgpack", b"\x28\xb5\x2f\xfd garbage"))


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"compression": "gzip"}, "compression must be 'zstd' or None"),
        ({"compression": "zstd", "compression_min_bytes": -1}, "compression_min_bytes"),
        ({"compression": "zstd", "compression_min_bytes": 1.5}, "compression_min_bytes"),
    ],
)
def test_bad_compression_settings_are_refused(
    backend: str, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ResilientSaver.from_urls(sqlite_path="unused.db", **kwargs)
