"""The thread lease on real Redis and Postgres/SQLite: epochs, waiting, release, loss, fallback."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import time
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.pregel import Pregel
from redis.asyncio import Redis

from langgraph_resilient import (
    ConfigurationError,
    EventKind,
    ExclusiveGraph,
    Lease,
    LockTimeoutError,
    ResilienceEvent,
    ResilientSaver,
    StaleLeaseError,
)
from langgraph_resilient.checkpoint.fencing import EPOCH_BAND
from tests.checkpoint.lease.conftest import expire_row, lease_key, row_token
from tests.checkpoint.lease.graphs import TurnState, assert_linear, takeover_graph
from tests.conftest import SaverFactory
from tests.servers import RedisServer

pytestmark = pytest.mark.timeout(60)


def config(thread_id: str, who: str = "w") -> Any:
    return {"configurable": {"thread_id": thread_id, "worker": who}}


async def turn(saver: ResilientSaver, thread_id: str, who: str) -> Any:
    """One turn of a small graph (a few puts and put_writes) on ``thread_id``."""
    graph = takeover_graph().compile(checkpointer=saver)
    return await graph.ainvoke({"log": [f"input:{who}"]}, config(thread_id, who))


@pytest.fixture(params=["redis", "store"])
def where(request: pytest.FixtureRequest) -> str:
    """Where the lease lives: in Redis, or in the durable store (no Redis configured)."""
    return str(request.param)


@pytest.fixture
def redis_kwargs(where: str, redis_server: RedisServer) -> dict[str, Any]:
    if where == "store":
        return {}
    return {"redis_url": redis_server.url, "redis_socket_timeout_s": 0.2}


# ---------------------------------------------------------------------------------- epochs


async def test_epochs_strictly_increase_across_holders(
    make_saver: SaverFactory, redis_kwargs: dict[str, Any], where: str
) -> None:
    s1, s2 = await make_saver(**redis_kwargs), await make_saver(**redis_kwargs)
    epochs = []
    for i in range(6):
        saver = (s1, s2)[i % 2]
        async with saver.lock_thread("t") as lease:
            assert lease.backend == ("redis" if where == "redis" else saver.store.tier_name)
            assert saver.fenced.epoch_of("t") == lease.epoch
            if i % 3 == 0:
                await turn(saver, "t", f"w{i}")  # writes raise the stored epoch too
            epochs.append(lease.epoch)
        assert saver.fenced.epoch_of("t") is None
    assert epochs == sorted(set(epochs)), epochs
    assert await s1.store.thread_epoch("t") <= epochs[-1]


async def test_deleted_thread_keeps_its_epoch(
    make_saver: SaverFactory, redis_kwargs: dict[str, Any]
) -> None:
    saver = await make_saver(**redis_kwargs)
    async with saver.lock_thread("t") as first:
        await turn(saver, "t", "a")
    await saver.adelete_thread("t")
    async with saver.lock_thread("t") as second:
        await turn(saver, "t", "b")
    assert second.epoch > first.epoch


# ---------------------------------------------------------------------------------- waiting


async def test_wait_s_timeout_raises_lock_timeout_error(
    make_saver: SaverFactory, redis_kwargs: dict[str, Any], events: list[ResilienceEvent]
) -> None:
    s1, s2 = await make_saver(**redis_kwargs), await make_saver(**redis_kwargs)
    async with s1.lock_thread("t", ttl_s=5):
        started = time.monotonic()
        with pytest.raises(LockTimeoutError, match=r"wait_s=0.3s .*retry later"):
            async with s2.lock_thread("t", wait_s=0.3):
                pytest.fail("two holders")
        assert 0.3 <= time.monotonic() - started < 1.5
    assert [e.kind for e in events].count(EventKind.LEASE_TIMEOUT) == 1
    async with s2.lock_thread("t", wait_s=0.5) as lease:  # free again at once
        assert not lease.lost


async def test_waiter_gets_the_lease_when_it_is_released(
    make_saver: SaverFactory, redis_kwargs: dict[str, Any]
) -> None:
    s1, s2 = await make_saver(**redis_kwargs), await make_saver(**redis_kwargs)
    spans: list[tuple[str, float, float]] = []

    async def hold(saver: ResilientSaver, name: str) -> None:
        async with saver.lock_thread("t", wait_s=5):
            start = time.monotonic()
            await asyncio.sleep(0.15)
            spans.append((name, start, time.monotonic()))

    await asyncio.gather(hold(s1, "a"), hold(s2, "b"), hold(s1, "c"), hold(s2, "d"))
    spans.sort(key=lambda s: s[1])
    for (_, _, end), (_, start, _) in itertools.pairwise(spans):
        assert start >= end, spans


async def test_tasks_of_one_saver_take_turns(make_saver: SaverFactory) -> None:
    saver = await make_saver()
    async with saver.lock_thread("t"):
        # A task started from a context that does not hold the lease (a child task of the
        # holder shares its lease, like LangGraph's node tasks do).
        waiter = asyncio.create_task(
            saver.lock_thread("t", wait_s=0.2).__aenter__(), context=contextvars.Context()
        )
        with pytest.raises(LockTimeoutError, match="another task of this process"):
            await waiter


# ---------------------------------------------------------------------------------- release


async def test_release_never_deletes_another_holders_redis_key(
    backend: str, make_saver: SaverFactory, redis_server: RedisServer, raw_redis: Redis
) -> None:
    kwargs = {"redis_url": redis_server.url}
    a, b, c = [await make_saver(**kwargs) for _ in range(3)]
    async with a.lock_thread("t", ttl_s=30) as lease_a:
        await raw_redis.delete(lease_key(a, "t"))  # as if A's lease expired while it stalled
        async with b.lock_thread("t", wait_s=1) as lease_b:
            assert lease_b.epoch > lease_a.epoch
    # (A left first, B is released too; now the same with A leaving while B holds.)
    async with a.lock_thread("t", ttl_s=30) as lease_a:
        await raw_redis.delete(lease_key(a, "t"))
        lock_b = b.lock_thread("t", wait_s=1)
        lease_b = await lock_b.__aenter__()
    assert await raw_redis.get(lease_key(a, "t")) == lease_b.token.encode()  # A's exit kept it
    with pytest.raises(LockTimeoutError):
        async with c.lock_thread("t", wait_s=0.2):
            pass
    await lock_b.__aexit__(None, None, None)
    assert await raw_redis.get(lease_key(a, "t")) is None


async def test_release_never_clears_another_holders_row(make_saver: SaverFactory) -> None:
    a, b = await make_saver(), await make_saver()
    async with a.lock_thread("t", ttl_s=30) as lease_a:
        await expire_row(a, "t")  # A stalled past its lease
        lock_b = b.lock_thread("t", wait_s=1)
        lease_b = await lock_b.__aenter__()
        assert lease_b.epoch > lease_a.epoch
    assert await row_token(a, "t") == lease_b.token
    await lock_b.__aexit__(None, None, None)
    assert await row_token(a, "t") is None


# ---------------------------------------------------------------------------------- loss


async def test_lost_lease_is_signalled_promptly_and_its_writes_refused(
    make_saver: SaverFactory,
    redis_kwargs: dict[str, Any],
    where: str,
    raw_redis: Redis,
    events: list[ResilienceEvent],
) -> None:
    s1, s2 = await make_saver(**redis_kwargs), await make_saver(**redis_kwargs)
    await turn(s1, "t", "before")
    called: list[Lease] = []
    async with s1.lock_thread("t", ttl_s=0.6) as lease:
        lease.on_lost(called.append)
        started = time.monotonic()
        if where == "redis":
            await raw_redis.delete(lease_key(s1, "t"))
        else:
            await expire_row(s1, "t")
        async with s2.lock_thread("t", wait_s=1) as newer:
            await asyncio.wait_for(lease.wait_lost(), timeout=1.0)
            assert time.monotonic() - started < 0.6  # within one renewal interval or so
            assert lease.lost and lease.lost_event.is_set() and called == [lease]
            assert lease.lost_reason
            await turn(s2, "t", "newer")
            assert s1.fenced.epoch_of("t") == lease.epoch  # still fenced with the lost epoch
            with pytest.raises(StaleLeaseError):
                await turn(s1, "t", "stale")
        assert newer.epoch > lease.epoch
    lost = [e for e in events if e.kind is EventKind.LEASE_LOST]
    assert [e.detail["epoch"] for e in lost].count(lease.epoch) == 1
    state = await takeover_graph().compile(checkpointer=s2).aget_state(config("t"))
    assert "input:stale" not in state.values["log"]
    assert_linear_async = [(t.config, t.parent_config) async for t in s2.alist(config("t"))]
    from tests.checkpoint.lease.graphs import check_linear

    check_linear(assert_linear_async)


def test_stalled_holder_learns_it_lost_the_lease(
    backend: str, tmp_path: Any, redis_server: RedisServer, where: str
) -> None:
    """The holder's event loop is blocked past its ttl (a GC pause, a CPU-bound node): another
    worker takes over, and the holder's renewal reports the loss as soon as it runs again."""
    from tests.conftest import POSTGRES_URL, unique_prefix

    prefix = unique_prefix()
    kwargs: dict[str, Any] = {"prefix": prefix}
    if backend == "postgres":
        kwargs["postgres_url"] = POSTGRES_URL
    else:
        kwargs["sqlite_path"] = str(tmp_path / "state.db")
    if where == "redis":
        kwargs["redis_url"] = redis_server.url
    try:
        with (
            ResilientSaver.from_urls(**kwargs) as s1,
            ResilientSaver.from_urls(**kwargs) as s2,
            s1.lock_thread("t", ttl_s=0.5) as lease,
        ):
            loop = s1.tiers.bridge.loop
            assert loop is not None
            loop.call_soon_threadsafe(time.sleep, 1.2)  # freeze s1's event loop
            time.sleep(0.7)
            with s2.lock_thread("t", wait_s=2) as newer:
                assert newer.epoch > lease.epoch
                assert lease.lost_event.wait(timeout=1.5), "the loss went unnoticed"
    finally:
        if backend == "postgres":
            import asyncio as _asyncio

            from tests.conftest import drop_prefixed_tables

            _asyncio.run(drop_prefixed_tables(POSTGRES_URL, prefix))


# ---------------------------------------------------------------------------------- Redis faults


@pytest.mark.fault
async def test_epochs_grow_across_a_redis_restart(
    make_saver: SaverFactory, fresh_redis: RedisServer
) -> None:
    kwargs = {"redis_url": fresh_redis.url, "redis_socket_timeout_s": 0.2}
    s1, s2 = await make_saver(**kwargs), await make_saver(**kwargs)
    async with s1.lock_thread("t") as first:
        await turn(s1, "t", "first")
    lock_a = s1.lock_thread("t", ttl_s=30)
    held = await lock_a.__aenter__()  # held and never written: only Redis knows this epoch
    assert held.backend == "redis" and held.epoch > first.epoch
    fresh_redis.stop()
    fresh_redis.start()  # no persistence: the lease and the epoch counter are gone
    try:
        newer = None
        for _ in range(100):  # until the tier's breaker lets Redis be used again
            async with s2.lock_thread("t", wait_s=5) as lease:
                if lease.backend == "redis":
                    newer = lease
                    await turn(s2, "t", "newer")
                    break
            await asyncio.sleep(0.05)
        assert newer is not None and newer.epoch > held.epoch
        with pytest.raises(StaleLeaseError):
            await turn(s1, "t", "stale")  # the pre-restart holder is fenced out
    finally:
        await lock_a.__aexit__(None, None, None)
    async with s1.lock_thread("t") as last:
        assert last.epoch > newer.epoch


@pytest.mark.fault
async def test_epochs_grow_when_redis_and_the_store_lease_alternate(
    make_saver: SaverFactory, fresh_redis: RedisServer
) -> None:
    """Redis leases, Redis stopped (store leases), Redis back empty, Redis frozen (store leases,
    Redis keeps its counter), Redis thawed: one increasing sequence throughout."""
    kwargs = {"redis_url": fresh_redis.url, "redis_socket_timeout_s": 0.1}
    saver = await make_saver(**kwargs)
    seen: list[tuple[str, int]] = []

    async def take(expect: str, count: int = 2, *, write: bool = False) -> None:
        got = 0
        for _ in range(200):
            async with saver.lock_thread("t", wait_s=5) as lease:
                seen.append((lease.backend, lease.epoch))
                if write:
                    await turn(saver, "t", f"e{lease.epoch}")
                got += (lease.backend == "redis") == (expect == "redis")
            if got >= count:
                return
            await asyncio.sleep(0.05)
        pytest.fail(f"never got {count} {expect} leases: {seen}")

    store = saver.store.tier_name
    await take("redis", write=True)
    fresh_redis.stop()
    await take(store, write=True)
    fresh_redis.start()
    await take("redis", write=True)
    fresh_redis.freeze()
    try:
        await take(store)
    finally:
        fresh_redis.thaw()
    await take("redis", write=True)
    epochs = [e for _, e in seen]
    assert epochs == sorted(set(epochs)), seen
    backends = [b for b, _ in seen]
    assert backends.count("redis") >= 6 and backends.count(store) >= 4
    assert {e // EPOCH_BAND % 2 for b, e in seen if b == "redis"} == {1}
    assert {e // EPOCH_BAND % 2 for b, e in seen if b != "redis"} == {0}


@pytest.mark.fault
async def test_lease_moves_to_the_store_when_redis_fails_mid_lease(
    make_saver: SaverFactory, fresh_redis: RedisServer, events: list[ResilienceEvent]
) -> None:
    kwargs = {"redis_url": fresh_redis.url, "redis_socket_timeout_s": 0.1}
    s1, s2 = await make_saver(**kwargs), await make_saver(**kwargs)
    async with s1.lock_thread("t", ttl_s=0.9) as lease:
        assert lease.backend == "redis"
        fresh_redis.stop()
        for _ in range(40):
            if lease.backend != "redis":
                break
            await asyncio.sleep(0.05)
        assert lease.backend == s1.store.tier_name and not lease.lost
        assert any(
            e.kind is EventKind.LEASE_FAILOVER and e.detail["epoch"] == lease.epoch for e in events
        )
        with pytest.raises(LockTimeoutError):  # the store lease keeps others out
            async with s2.lock_thread("t", wait_s=0.4):
                pass
        await turn(s1, "t", "holder")  # writes under the same epoch still pass
        await asyncio.sleep(1.0)  # renewals continue in the store
        assert not lease.lost
    async with s2.lock_thread("t", wait_s=2) as after:
        assert after.epoch > lease.epoch


@pytest.mark.fault
async def test_a_lagging_redis_counter_is_fenced_then_repaired(
    backend: str, make_saver: SaverFactory, redis_server: RedisServer, dead_redis_url: str
) -> None:
    """A replica that cannot reach Redis takes store leases while Redis stays up for another
    replica whose tier never repairs (repair interval 60 s): that replica's next Redis epoch is
    behind the store's. Its first write is refused (nothing written), the counter is repaired on
    exit, and the next lease is ahead again."""
    up = await make_saver(redis_url=redis_server.url, redis_repair_interval_s=60)
    cut_off = await make_saver(redis_url=dead_redis_url, redis_socket_timeout_s=0.1)
    async with up.lock_thread("t") as first:
        await turn(up, "t", "first")
    async with cut_off.lock_thread("t") as fallback:
        assert fallback.backend == cut_off.store.tier_name and fallback.epoch > first.epoch
        await turn(cut_off, "t", "fallback")
    with pytest.raises(StaleLeaseError):
        async with up.lock_thread("t") as lagging:
            assert lagging.epoch < fallback.epoch
            await turn(up, "t", "lagging")
    async with up.lock_thread("t") as repaired:
        assert repaired.backend == "redis" and repaired.epoch > fallback.epoch
        await turn(up, "t", "repaired")
    state = await takeover_graph().compile(checkpointer=up).aget_state(config("t"))
    assert "input:lagging" not in state.values["log"]
    assert state.values["log"][-3:] == ["input:repaired", "work:repaired", "finish:repaired"]


# ---------------------------------------------------------------------------------- sync, nesting


def test_sync_lock_thread_and_nesting(backend: str, tmp_path: Any) -> None:
    from tests.conftest import POSTGRES_URL, drop_prefixed_tables, unique_prefix

    prefix = unique_prefix()
    kwargs: dict[str, Any] = {"prefix": prefix}
    if backend == "postgres":
        kwargs["postgres_url"] = POSTGRES_URL
    else:
        kwargs["sqlite_path"] = str(tmp_path / "state.db")
    try:
        with ResilientSaver.from_urls(**kwargs) as saver:
            graph = takeover_graph().compile(checkpointer=saver)
            with saver.lock_thread("t") as outer:
                with saver.lock_thread("t") as inner:
                    assert inner is outer
                graph.invoke({"log": ["input:sync"]}, config("t", "sync"))
                assert saver.fenced.held() == {"t": outer.epoch}
                assert not outer.released
            assert outer.released and saver.fenced.held() == {}
            assert_linear(saver, "t")
    finally:
        if backend == "postgres":
            asyncio.run(drop_prefixed_tables(POSTGRES_URL, prefix))


async def test_nested_lock_in_the_same_task_yields_the_outer_lease(
    make_saver: SaverFactory,
) -> None:
    saver = await make_saver()
    async with saver.lock_thread("t") as outer:
        async with saver.lock_thread("t", wait_s=0) as inner:
            assert inner is outer
        assert not outer.released and saver.fenced.epoch_of("t") == outer.epoch
    assert outer.released


def test_invalid_arguments_are_refused() -> None:
    saver = ResilientSaver.from_urls(sqlite_path=":memory:")
    with pytest.raises(ConfigurationError, match="ttl_s"):
        saver.lock_thread("t", ttl_s=0)
    with pytest.raises(ConfigurationError, match="wait_s"):
        saver.lock_thread("t", wait_s=-1)
    with pytest.raises(ConfigurationError, match="compiled graph"):
        ExclusiveGraph.wrap(object())


# ---------------------------------------------------------------------------------- graph


async def test_exclusive_graph_holds_the_lease_around_every_call(
    make_saver: SaverFactory,
) -> None:
    saver = await make_saver()
    seen: list[int | None] = []

    async def node(state: TurnState) -> dict[str, Any]:
        seen.append(saver.fenced.epoch_of("t"))
        return {"log": ["x"]}

    inner_builder: StateGraph[TurnState] = StateGraph(TurnState)
    inner_builder.add_node("inner", node)
    inner_builder.add_edge(START, "inner")
    inner_builder.add_edge("inner", END)
    inner = ExclusiveGraph.wrap(inner_builder.compile())
    builder: StateGraph[TurnState] = StateGraph(TurnState)
    builder.add_node("sub", inner)  # a subgraph runs under the root call's lease
    builder.add_node("own", node)
    builder.add_edge(START, "sub")
    builder.add_edge("sub", "own")
    builder.add_edge("own", END)
    graph = ExclusiveGraph.wrap(builder.compile(checkpointer=saver), ttl_s=5, wait_s=5)
    assert isinstance(graph, Pregel) and isinstance(graph, ExclusiveGraph)
    assert isinstance(graph.with_config(tags=["x"]), ExclusiveGraph)

    cfg = {"configurable": {"thread_id": "t"}}
    await graph.ainvoke({"log": []}, cfg)
    async for _ in graph.astream({"log": []}, cfg):
        pass
    await graph.aupdate_state(cfg, {"log": ["patched"]})
    assert all(epoch is not None for epoch in seen) and len(seen) == 4
    assert saver.fenced.held() == {}
    assert_linear_pairs = [(t.config, t.parent_config) async for t in saver.alist(cfg)]
    from tests.checkpoint.lease.graphs import check_linear

    check_linear(assert_linear_pairs)

    # Two concurrent calls on one thread run one after the other.
    spans: list[tuple[float, float]] = []

    async def slow(state: TurnState) -> dict[str, Any]:
        start = time.monotonic()
        await asyncio.sleep(0.1)
        spans.append((start, time.monotonic()))
        return {"log": ["slow"]}

    slow_builder: StateGraph[TurnState] = StateGraph(TurnState)
    slow_builder.add_node("slow", slow)
    slow_builder.add_edge(START, "slow")
    slow_builder.add_edge("slow", END)
    slow_graph = ExclusiveGraph.wrap(slow_builder.compile(checkpointer=saver))
    cfg2 = {"configurable": {"thread_id": "t2"}}
    await asyncio.gather(*(slow_graph.ainvoke({"log": []}, cfg2) for _ in range(3)))
    spans.sort()
    assert all(b[0] >= a[1] for a, b in itertools.pairwise(spans))
    final = await slow_graph.aget_state(cfg2)
    assert final.values["log"] == ["slow"] * 3


def test_exclusive_graph_sync_calls(tmp_path: Any) -> None:
    with ResilientSaver.from_urls(sqlite_path=str(tmp_path / "s.db")) as saver:
        graph = ExclusiveGraph.wrap(takeover_graph().compile(checkpointer=saver))
        out = graph.invoke({"log": ["input:a"]}, config("t", "a"))
        assert out["log"] == ["input:a", "work:a", "finish:a"]
        chunks = list(graph.stream({"log": ["input:b"]}, config("t", "b")))
        assert len(chunks) == 2
        graph.update_state(config("t"), {"log": ["patched"]})
        assert saver.fenced.held() == {}
        assert_linear(saver, "t")

    plain = ExclusiveGraph.wrap(takeover_graph().compile(checkpointer=InMemorySaver()))
    with pytest.raises(ConfigurationError, match="ResilientSaver"):
        plain.invoke({"log": []}, config("t"))


async def test_with_resilience_exclusive_threads(make_saver: SaverFactory) -> None:
    from langgraph_resilient import ResiliencePolicy, Retry, with_resilience

    saver = await make_saver()
    policy = ResiliencePolicy(retry=Retry(max_attempts=2, initial_delay_s=0.01))
    from_builder = with_resilience(takeover_graph(), policy, exclusive_threads=True)
    compiled = from_builder.compile(checkpointer=saver)
    assert isinstance(compiled, ExclusiveGraph) and compiled.lease_ttl_s == 30.0
    wrapped = with_resilience(
        takeover_graph().compile(checkpointer=saver),
        policy,
        exclusive_threads=True,
        lease_ttl_s=5,
        lease_wait_s=1,
    )
    assert isinstance(wrapped, ExclusiveGraph) and wrapped.lease_wait_s == 1.0
    plain = with_resilience(takeover_graph().compile(checkpointer=saver), policy)
    assert not isinstance(plain, ExclusiveGraph)
    async with saver.lock_thread("t", wait_s=0) as lease:  # a held lease makes the call wait
        other = ResilientSaver(saver.store, settings=saver.settings)
        other.tiers.bridge = saver.tiers.bridge
        blocked = with_resilience(
            takeover_graph().compile(checkpointer=other), exclusive_threads=True, lease_wait_s=0.2
        )
        with pytest.raises(LockTimeoutError):
            await blocked.ainvoke({"log": []}, config("t"))
        assert not lease.lost
    out = await wrapped.ainvoke({"log": ["input:a"]}, config("t", "a"))
    assert out["log"] == ["input:a", "work:a", "finish:a"]


async def test_cancelled_callers_leave_no_lease_behind(
    make_saver: SaverFactory, redis_kwargs: dict[str, Any]
) -> None:
    s1, s2 = await make_saver(**redis_kwargs), await make_saver(**redis_kwargs)
    async with s1.lock_thread("t"):
        waiting = asyncio.create_task(s2.lock_thread("t", wait_s=5).__aenter__())
        await asyncio.sleep(0.1)
        waiting.cancel()  # gives up while waiting
        with pytest.raises(asyncio.CancelledError):
            await waiting

    entered = asyncio.Event()

    async def holder() -> None:
        async with s2.lock_thread("t"):
            entered.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(holder())
    await entered.wait()
    task.cancel()  # cancelled while holding: the lease is still released
    with pytest.raises(asyncio.CancelledError):
        await task
    async with s1.lock_thread("t", wait_s=0.5) as lease:
        assert not lease.lost
    assert s2.fenced.held() == {} and s1.fenced.held() == {}
