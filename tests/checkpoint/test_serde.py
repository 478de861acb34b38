"""The saver's serde is used for every stored byte: strict allowlists, with_allowlist() copies,
and EncryptedSerializer (no state and no metadata stored in plaintext, filters still work)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

import asyncpg
import redis.asyncio
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import StateGraph

from langgraph_resilient import ResilientSaver
from tests.conftest import POSTGRES_URL, REDIS_URL, SaverFactory
from tests.graphs import Log, appends, chain

SECRET = "zebra-cobalt-4417"


@dataclass
class Point:
    x: int
    y: int


def _graph() -> StateGraph[Log]:
    return chain(("write", appends(f"{SECRET}-node")))


async def _raw_bytes(saver: ResilientSaver, backend: str) -> bytes:
    """Every value of every column of the saver's tables (and every Redis key and value of the
    tiered saver), as one byte string."""
    prefix = saver.settings.prefix
    chunks: list[bytes] = []
    if backend != "sqlite":
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            for table in ("checkpoints", "blobs", "writes"):
                for row in await conn.fetch(f"SELECT * FROM {prefix}{table}"):
                    for value in row.values():
                        chunks.append(value if isinstance(value, bytes) else str(value).encode())
        finally:
            await conn.close()
    else:
        with sqlite3.connect(saver.store.path) as conn:  # type: ignore[attr-defined]
            for table in ("checkpoints", "blobs", "writes"):
                for row in conn.execute(f"SELECT * FROM {prefix}{table}"):
                    for value in row:
                        chunks.append(value if isinstance(value, bytes) else str(value).encode())
    if backend == "tiered":
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        try:
            async for key in client.scan_iter(match=f"{prefix}*"):
                chunks.append(key)
                kind = await client.type(key)
                if kind == b"hash":
                    chunks.extend(v for kv in (await client.hgetall(key)).items() for v in kv)
                elif kind == b"zset":  # writes in flight, history indexes: ids and tokens
                    chunks.extend(await client.zrange(key, 0, -1))
                else:
                    chunks.append(await client.get(key))
        finally:
            await client.aclose()
    return b"\n".join(chunks)


async def test_encrypted_serde_stores_no_plaintext(make_saver: SaverFactory, backend: str) -> None:
    serde = EncryptedSerializer.from_pycryptodome_aes(key=b"0123456789abcdef")
    saver = await make_saver(serde=serde)
    graph = _graph().compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "enc"}, "metadata": {"tag": SECRET}}
    await graph.ainvoke({"log": [f"{SECRET}-input"]}, config)
    state = await graph.aget_state(config)
    assert state.values["log"] == [f"{SECRET}-input", f"{SECRET}-node"]

    raw = await _raw_bytes(saver, backend)
    assert raw, "the tables hold data"
    assert SECRET.encode() not in raw
    assert b'"source"' not in raw and b"loop" not in raw  # metadata is not readable either

    listed = [t async for t in saver.alist(config, filter={"tag": SECRET})]
    assert listed and all(t.metadata["tag"] == SECRET for t in listed)
    assert [t async for t in saver.alist(config, filter={"tag": "other"})] == []
    steps = [t.metadata["step"] async for t in saver.alist(config, filter={"source": "loop"})]
    assert steps == [1, 0]


async def test_plaintext_serde_filters_on_the_server_too(saver: ResilientSaver) -> None:
    graph = _graph().compile(checkpointer=saver)
    for i in range(3):
        config = {"configurable": {"thread_id": f"t{i}"}, "metadata": {"user": f"u{i % 2}"}}
        await graph.ainvoke({"log": []}, config)
    found = [t async for t in saver.alist(None, filter={"user": "u0", "source": "loop"})]
    assert sorted(t.config["configurable"]["thread_id"] for t in found) == ["t0", "t0", "t2", "t2"]
    limited = [t async for t in saver.alist(None, filter={"user": "u0"}, limit=3)]
    assert len(limited) == 3


async def test_strict_allowlist_and_with_allowlist_copy(make_saver: SaverFactory) -> None:
    saver = await make_saver(serde=JsonPlusSerializer(allowed_msgpack_modules=None))
    config = {"configurable": {"thread_id": "p", "checkpoint_ns": ""}}
    cp = {
        "v": 4,
        "id": "1f0c0000-0000-6000-8000-000000000001",
        "ts": "2026-01-01T00:00:00+00:00",
        "channel_values": {"point": Point(1, 2)},
        "channel_versions": {"point": "1"},
        "versions_seen": {},
        "updated_channels": None,
    }
    stored = await saver.aput(config, cp, {}, {"point": "1"})  # type: ignore[arg-type]

    strict = await saver.aget_tuple(stored)
    assert strict is not None
    assert not isinstance(strict.checkpoint["channel_values"]["point"], Point)

    allowed = saver.with_allowlist([Point])
    assert allowed is not saver
    tup = await allowed.aget_tuple(stored)
    assert tup is not None and tup.checkpoint["channel_values"]["point"] == Point(1, 2)
    # the copy shares the connection and writes with its own serde
    cp2 = {**cp, "id": "1f0c0000-0000-6000-8000-000000000002"}
    cp2["channel_values"] = {"point": Point(3, 4)}
    cp2["channel_versions"] = {"point": "2"}
    stored2 = await allowed.aput(stored, cp2, {}, {"point": "2"})  # type: ignore[arg-type]
    tup2 = await allowed.aget_tuple(stored2)
    assert tup2 is not None and tup2.checkpoint["channel_values"]["point"] == Point(3, 4)
