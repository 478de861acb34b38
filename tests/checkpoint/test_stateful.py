"""Stateful property test: ``ResilientSaver`` against LangGraph's ``InMemorySaver`` as the model.

Hypothesis drives both savers with the same random sequence of operations (``put`` with random
parents, namespaces, channel values and ``new_versions``; ``put_writes`` including the special
channels and repeated task ids; ``get_tuple``; ``list`` with filter/before/limit;
``delete_thread``; ``copy_thread``; ``delete_for_runs``; ``prune``;
``get_delta_channel_history``) and checks after every step that both return the same
checkpoints, metadata, parent configs and pending writes.

``InMemorySaver`` has no ``copy_thread``/``delete_for_runs``/``prune``; the machine applies
those to the in-memory saver's storage itself (``model_*`` methods below), following the
documented contract.

The ResilientSaver runs in sync mode (``with``), as the machine is synchronous, on every test
backend; two savers share the database like two replicas, and the machine switches between them.
"""

from __future__ import annotations

import copy
import dataclasses
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import CheckpointTuple
from langgraph.checkpoint.memory import InMemorySaver

from langgraph_resilient import ResilientSaver
from tests.conftest import (
    SaverFactory,
    backend_kwargs,
)

T = TypeVar("T")

NAMESPACES = ("", "child:1", "child:2")
CHANNELS = ("messages", "count", "flag", "__start__")
SPECIAL_CHANNELS = ("__error__", "__interrupt__", "__resume__", "__scheduled__")
TASK_IDS = ("task-a", "task-b", "task-c")
TASK_PATHS = ("", "~__pregel_pull, a", "~__pregel_push, 0, b")
RUN_IDS = ("run-1", "run-2", "run-3")
SOURCES = ("input", "loop", "update", "fork")
MAX_THREADS = 6

SETTINGS = settings(
    max_examples=50,
    stateful_step_count=25,
    deadline=None,
    report_multiple_bugs=False,
    # No shrink phase: shrinking these sequences against real databases can take minutes. A
    # failure still prints its whole sequence (at most stateful_step_count steps); add
    # Phase.shrink locally to get a minimal one.
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# Values a graph could keep in a channel or in metadata (NaN is left out: NaN != NaN).
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False, width=32)
    | st.text(max_size=5)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
metadata_strategy = st.fixed_dictionaries(
    {
        "source": st.sampled_from(SOURCES),
        "step": st.integers(-1, 4),
        "parents": st.dictionaries(
            st.sampled_from(["", "child:1"]), st.text(max_size=4), max_size=1
        ),
    },
    optional={
        "run_id": st.sampled_from(RUN_IDS),
        "tag": values,
        "score": st.none() | st.booleans() | st.integers(0, 2),
    },
)
put_spec = st.fixed_dictionaries(
    {
        "ns": st.sampled_from(NAMESPACES),
        # Mostly chains (a run's next step), sometimes a new root or a fork off an older one.
        "parent_choice": st.sampled_from(["latest", "latest", "none", "random"]),
        "changed": st.sets(st.sampled_from(CHANNELS)),
        "channel_values": st.dictionaries(st.sampled_from(CHANNELS), values),
        "metadata": metadata_strategy,
        "extra_configurable": st.dictionaries(
            st.sampled_from(["user", "tenant"]), st.text(max_size=3)
        ),
        "config_metadata": st.dictionaries(st.sampled_from(["team", "score"]), st.integers(0, 3)),
    }
)
filter_values = (
    st.sampled_from(SOURCES)
    | st.integers(-1, 4)
    | st.sampled_from(RUN_IDS)
    | st.none()
    | st.booleans()
    | values
)
filter_strategy = st.none() | st.dictionaries(
    st.sampled_from(["source", "step", "run_id", "tag", "score", "absent"]),
    filter_values,
    max_size=2,
)


def key(config: RunnableConfig | None) -> tuple[str, str, str | None] | None:
    if config is None:
        return None
    conf = config["configurable"]
    return (conf["thread_id"], conf.get("checkpoint_ns", ""), conf.get("checkpoint_id"))


def comparable(tup: CheckpointTuple | None) -> tuple[Any, ...] | None:
    if tup is None:
        return None
    return (
        key(tup.config),
        tup.checkpoint,
        tup.metadata,
        key(tup.parent_config),
        tup.pending_writes,
    )


def order_key(tup: CheckpointTuple) -> tuple[str, str, str]:
    conf = tup.config["configurable"]
    return (conf["checkpoint_id"], conf["thread_id"], conf.get("checkpoint_ns", ""))


def outcome(call: Callable[[], T]) -> tuple[bool, T | BaseException]:
    try:
        return True, call()
    except Exception as exc:
        return False, exc


class SaverVersusInMemory(RuleBasedStateMachine):
    def __init__(self, replicas: Sequence[ResilientSaver]) -> None:
        super().__init__()
        # Two savers on one database, like two replicas: each operation goes to the current
        # one, and the machine switches between them at random.
        self.replicas = list(replicas)
        self.current = 0
        self.model = InMemorySaver()
        token = uuid.uuid4().hex[:8]
        self.token = token
        self.threads = [f"{token}-t{i}" for i in range(3)]
        self.next_id = 0
        self.next_version = 0
        self.last_put: tuple[Any, ...] | None = None
        self.last_writes: tuple[Any, ...] | None = None

    @property
    def real(self) -> ResilientSaver:
        return self.replicas[self.current]

    # ------------------------------------------------------------------ helpers

    def both(self, real: Callable[[], T], model: Callable[[], T]) -> tuple[T, T] | None:
        """Run one operation on both savers; they must both succeed or both refuse."""
        real_ok, real_result = outcome(real)
        model_ok, model_result = outcome(model)
        assert real_ok == model_ok, (
            f"ResilientSaver {'succeeded' if real_ok else f'raised {real_result!r}'} but "
            f"InMemorySaver {'succeeded' if model_ok else f'raised {model_result!r}'}"
        )
        if not real_ok:
            return None
        return real_result, model_result  # type: ignore[return-value]

    def known(self) -> list[tuple[str, str, str]]:
        """Every checkpoint the model holds, as (thread, ns, id), in a stable order."""
        return sorted(
            (tid, ns, cid)
            for tid, by_ns in self.model.storage.items()
            for ns, entries in by_ns.items()
            for cid in entries
        )

    def new_checkpoint_id(self) -> str:
        self.next_id += 1
        return f"1ef00000-0000-6000-8000-{self.next_id:012x}"

    def expected_list(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> list[tuple[Any, ...] | None]:
        # Newest first across threads and namespaces (InMemorySaver only orders within one
        # namespace; the saver's order is checkpoint id, then thread, then namespace, desc).
        items = list(self.model.list(config, filter=filter, before=before))
        items.sort(key=order_key, reverse=True)
        kept = items if limit is None else items[:limit]
        return [comparable(t) for t in kept]

    def compare_list(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
        saver: ResilientSaver | None = None,
    ) -> None:
        saver = saver or self.real
        real = [
            comparable(t)
            for t in saver.list(copy.deepcopy(config), filter=filter, before=before, limit=limit)
        ]
        expected = self.expected_list(config, filter, before, limit)
        assert real == expected

    # ------------------------------------------------------------------ writes

    @rule(data=st.data(), specs=st.lists(put_spec, min_size=1, max_size=4))
    def put(self, data: st.DataObject, specs: list[dict[str, Any]]) -> None:
        """A burst of puts on one thread, as a run's steps would make them."""
        thread = data.draw(st.sampled_from(self.threads), label="thread")
        for spec in specs:
            self.put_one(data, thread, **spec)

    def put_one(
        self,
        data: st.DataObject,
        thread: str,
        *,
        ns: str,
        parent_choice: str,
        changed: set[str],
        channel_values: dict[str, Any],
        metadata: dict[str, Any],
        extra_configurable: dict[str, str],
        config_metadata: dict[str, int],
    ) -> None:
        siblings = sorted(self.model.storage.get(thread, {}).get(ns, {}))
        parent: str | None = None
        if siblings and parent_choice == "latest":
            parent = siblings[-1]
        elif siblings and parent_choice == "random":
            parent = data.draw(st.sampled_from(siblings), label="parent")
        versions: dict[str, str] = {}
        if parent is not None:
            stored = self.model.get_tuple(
                {
                    "configurable": {
                        "thread_id": thread,
                        "checkpoint_ns": ns,
                        "checkpoint_id": parent,
                    }
                }
            )
            assert stored is not None
            versions = dict(stored.checkpoint["channel_versions"])
        new_versions: dict[str, str] = {}
        for channel in sorted(changed):
            self.next_version += 1
            new_versions[channel] = f"{self.next_version:032}.0"
        versions.update(new_versions)
        checkpoint_id = self.new_checkpoint_id()
        checkpoint = {
            "v": 4,
            "id": checkpoint_id,
            "ts": f"2025-01-01T00:00:{self.next_id % 60:02}+00:00",
            "channel_values": channel_values,
            "channel_versions": versions,
            "versions_seen": {"node": dict(new_versions)} if new_versions else {},
            "updated_channels": sorted(changed) or None,
        }
        config: RunnableConfig = {
            "configurable": {
                "thread_id": thread,
                "checkpoint_ns": ns,
                "checkpoint_id": parent,
                **extra_configurable,
            }
        }
        if config_metadata:
            config["metadata"] = config_metadata
        args = (config, checkpoint, metadata, new_versions)
        self.last_put = args
        self.apply_put(args)

    def apply_put(self, args: tuple[Any, ...]) -> None:
        results = self.both(
            lambda: self.real.put(*copy.deepcopy(args)),
            lambda: self.model.put(*copy.deepcopy(args)),
        )
        if results is not None:
            real, model = results
            assert real == model

    @precondition(lambda self: self.last_put is not None)
    @rule()
    def retry_last_put(self) -> None:
        """A put repeated (after a timeout, say) changes nothing: a stored checkpoint is
        immutable. (InMemorySaver would overwrite it, so the model is left alone then.) A
        checkpoint deleted since is simply stored again."""
        assert self.last_put is not None
        config, checkpoint, _, _ = self.last_put
        conf = config["configurable"]
        ns_entries = self.model.storage.get(conf["thread_id"], {}).get(conf["checkpoint_ns"], {})
        if checkpoint["id"] not in ns_entries:
            self.apply_put(self.last_put)
            return
        returned = self.real.put(*copy.deepcopy(self.last_put))
        assert key(returned) == (conf["thread_id"], conf["checkpoint_ns"], checkpoint["id"])

    @precondition(lambda self: bool(self.known()))
    @rule(
        data=st.data(),
        calls=st.lists(
            st.tuples(
                st.sampled_from(TASK_IDS),
                st.sampled_from(TASK_PATHS),
                st.lists(
                    st.tuples(st.sampled_from(CHANNELS + SPECIAL_CHANNELS), values),
                    min_size=1,
                    max_size=4,
                ),
            ),
            min_size=1,
            max_size=3,
        ),
    )
    def put_writes(
        self, data: st.DataObject, calls: list[tuple[str, str, list[tuple[str, Any]]]]
    ) -> None:
        """Several tasks (task ids repeat) write against one checkpoint."""
        thread, ns, checkpoint_id = data.draw(st.sampled_from(self.known()), label="target")
        config: RunnableConfig = {
            "configurable": {
                "thread_id": thread,
                "checkpoint_ns": ns,
                "checkpoint_id": checkpoint_id,
            }
        }
        for task_id, task_path, writes in calls:
            args = (config, writes, task_id, task_path)
            self.last_writes = args
            self.apply_put_writes(args)

    def apply_put_writes(self, args: tuple[Any, ...]) -> None:
        results = self.both(
            lambda: self.real.put_writes(*copy.deepcopy(args)),
            lambda: self.model.put_writes(*copy.deepcopy(args)),
        )
        if results is not None:
            assert results == (None, None)

    @precondition(lambda self: self.last_writes is not None)
    @rule()
    def retry_last_put_writes(self) -> None:
        assert self.last_writes is not None
        self.apply_put_writes(self.last_writes)

    # ------------------------------------------------------------------ reads

    @rule(data=st.data(), ns=st.sampled_from(NAMESPACES))
    def get_latest(self, data: st.DataObject, ns: str) -> None:
        thread = data.draw(st.sampled_from([*self.threads, f"{self.token}-never"]), label="thread")
        config: RunnableConfig = {"configurable": {"thread_id": thread, "checkpoint_ns": ns}}
        assert comparable(self.real.get_tuple(config)) == comparable(self.model.get_tuple(config))

    @precondition(lambda self: bool(self.known()))
    @rule(data=st.data(), other_ns=st.booleans(), unknown=st.booleans())
    def get_by_id(self, data: st.DataObject, other_ns: bool, unknown: bool) -> None:
        thread, ns, checkpoint_id = data.draw(st.sampled_from(self.known()), label="target")
        if other_ns:
            ns = data.draw(st.sampled_from(NAMESPACES), label="ns")
        if unknown:
            checkpoint_id = "1ef00000-0000-6000-8000-ffffffffffff"
        config: RunnableConfig = {
            "configurable": {
                "thread_id": thread,
                "checkpoint_ns": ns,
                "checkpoint_id": checkpoint_id,
            }
        }
        assert comparable(self.real.get_tuple(config)) == comparable(self.model.get_tuple(config))

    @rule(
        data=st.data(),
        scope=st.sampled_from(["all", "thread", "namespace", "checkpoint"]),
        filter=filter_strategy,
        use_before=st.booleans(),
        limit=st.none() | st.integers(0, 5),
    )
    def list_checkpoints(
        self,
        data: st.DataObject,
        scope: str,
        filter: dict[str, Any] | None,
        use_before: bool,
        limit: int | None,
    ) -> None:
        known = self.known()
        config: RunnableConfig | None = None
        if scope != "all":
            thread = data.draw(st.sampled_from(self.threads), label="thread")
            conf: dict[str, Any] = {"thread_id": thread}
            if scope in ("namespace", "checkpoint"):
                conf["checkpoint_ns"] = data.draw(st.sampled_from(NAMESPACES), label="ns")
            if scope == "checkpoint" and known:
                conf["checkpoint_id"] = data.draw(st.sampled_from(known), label="id")[2]
            config = {"configurable": conf}
        before: RunnableConfig | None = None
        if use_before and known:
            b_thread, b_ns, b_id = data.draw(st.sampled_from(known), label="before")
            before = {
                "configurable": {
                    "thread_id": b_thread,
                    "checkpoint_ns": b_ns,
                    "checkpoint_id": b_id,
                }
            }
        self.compare_list(config, filter=filter, before=before, limit=limit)

    @rule(
        data=st.data(),
        ns=st.sampled_from(NAMESPACES),
        channels=st.lists(st.sampled_from(CHANNELS), unique=True, max_size=3),
        at_head=st.booleans(),
    )
    def delta_channel_history(
        self, data: st.DataObject, ns: str, channels: list[str], at_head: bool
    ) -> None:
        thread = data.draw(st.sampled_from(self.threads), label="thread")
        conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ns}
        ids = sorted(self.model.storage.get(thread, {}).get(ns, {}))
        if ids and not at_head:
            conf["checkpoint_id"] = data.draw(st.sampled_from(ids), label="checkpoint")
        config: RunnableConfig = {"configurable": conf}
        real = self.real.get_delta_channel_history(config=config, channels=channels)
        model = self.model.get_delta_channel_history(config=config, channels=channels)
        assert dict(real) == dict(model)

    # ------------------------------------------------------------------ maintenance

    @rule(data=st.data())
    def delete_thread(self, data: st.DataObject) -> None:
        thread = data.draw(st.sampled_from(self.threads), label="thread")
        self.real.delete_thread(thread)
        self.model.delete_thread(thread)

    @precondition(lambda self: len(self.threads) < MAX_THREADS)
    @rule(data=st.data())
    def copy_thread(self, data: st.DataObject) -> None:
        source = data.draw(st.sampled_from(self.threads), label="source")
        target = f"{self.token}-t{len(self.threads)}"
        self.threads.append(target)
        self.real.copy_thread(source, target)
        self.model_copy_thread(source, target)

    @rule(run_ids=st.lists(st.sampled_from([*RUN_IDS, "run-unknown"]), max_size=2))
    def delete_for_runs(self, run_ids: list[str]) -> None:
        self.real.delete_for_runs(run_ids)
        self.model_delete_for_runs(set(run_ids))

    @rule(data=st.data(), strategy=st.sampled_from(["keep_latest", "delete"]))
    def prune(self, data: st.DataObject, strategy: str) -> None:
        threads = data.draw(
            st.lists(st.sampled_from(self.threads), unique=True, max_size=2), label="threads"
        )
        self.real.prune(threads, strategy=strategy)
        for thread in threads:
            if strategy == "delete":
                self.model.delete_thread(thread)
            else:
                self.model_keep_latest(thread)

    # ------------------------------------------------------------------ the model's extras

    def model_copy_thread(self, source: str, target: str) -> None:
        """Every checkpoint, value and write of ``source``, under ``target`` (a new thread)."""
        m = self.model
        for ns, entries in list(m.storage.get(source, {}).items()):
            m.storage[target][ns].update(entries)
        for (tid, ns, cid), writes in list(m.writes.items()):
            if tid == source:
                m.writes[(target, ns, cid)] = dict(writes)
        for (tid, ns, channel, version), blob in list(m.blobs.items()):
            if tid == source:
                m.blobs[(target, ns, channel, version)] = blob

    def model_delete_for_runs(self, run_ids: set[str]) -> None:
        """Checkpoints whose metadata names one of ``run_ids``, and their writes, go."""
        m = self.model
        for tid, by_ns in m.storage.items():
            for ns, entries in by_ns.items():
                for cid, (_, metadata, _) in list(entries.items()):
                    if m.serde.loads_typed(metadata).get("run_id") in run_ids:
                        del entries[cid]
                        m.writes.pop((tid, ns, cid), None)

    def model_keep_latest(self, thread: str) -> None:
        """Each namespace keeps its newest checkpoint (with its writes); the rest go, and the
        kept checkpoint no longer points at a parent that was deleted."""
        m = self.model
        for ns, entries in m.storage.get(thread, {}).items():
            if not entries:
                continue
            head = max(entries)
            doomed = [cid for cid in entries if cid != head]
            for cid in doomed:
                del entries[cid]
                m.writes.pop((thread, ns, cid), None)
            body, metadata, parent = entries[head]
            if parent in doomed:
                entries[head] = (body, metadata, None)

    # ------------------------------------------------------------------ after every step

    @rule(index=st.integers(0, 1))
    def switch_replica(self, index: int) -> None:
        self.current = index

    @invariant()
    def everything_matches(self) -> None:
        for replica in self.replicas:
            self.compare_list(None, saver=replica)

    def teardown(self) -> None:
        for thread in self.threads:
            self.real.delete_thread(thread)


@pytest.fixture
def replicas(backend: str, tmp_path: Path, sync_prefix: str) -> Iterator[list[ResilientSaver]]:
    """Two savers entered with plain ``with`` (sync mode) on one database of the backend."""
    kwargs = backend_kwargs(backend, tmp_path / "stateful.db")
    with (
        ResilientSaver.from_urls(prefix=sync_prefix, **kwargs) as first,
        ResilientSaver.from_urls(prefix=sync_prefix, **kwargs) as second,
    ):
        for saver in (first, second):
            # Small pages, so listing crosses page boundaries (keyset cursor) all the time.
            saver.settings = dataclasses.replace(saver.settings, list_page_size=3)
        yield [first, second]


def test_saver_behaves_like_in_memory_saver(replicas: list[ResilientSaver]) -> None:
    run_state_machine_as_test(lambda: SaverVersusInMemory(replicas), settings=SETTINGS)


# --------------------------------------------------------------------------- pinned examples
# Differences the state machine found, kept as plain examples so they stay easy to read.


def plain_checkpoint(n: int) -> dict[str, Any]:
    return {
        "v": 4,
        "id": f"1ef00000-0000-6000-8000-{n:012x}",
        "ts": "2025-01-01T00:00:00+00:00",
        "channel_values": {},
        "channel_versions": {},
        "versions_seen": {},
        "updated_channels": None,
    }


FILTER_METADATA = [
    {"source": "input", "step": -1, "flag": True},
    {"source": "loop", "step": 0, "flag": False, "run_id": "run-1"},
    {"source": "loop", "step": 1, "nested": {"a": None, "b": [1, 2]}},
]


@pytest.mark.parametrize(
    "filter",
    [
        {"source": "loop"},
        {"step": 0},
        {"step": 0.0},
        {"nested": {"b": [1, 2], "a": None}},
        {"run_id": None},  # a key the metadata lacks: metadata.get(key) == None
        {"flag": 1},  # True == 1
        {"flag": 0},  # False == 0
        {"step": False},  # 0 == False
    ],
    ids=repr,
)
async def test_list_filter_matches_in_memory_saver(
    make_saver: SaverFactory, filter: dict[str, Any]
) -> None:
    saver, model = await make_saver(), InMemorySaver()
    config: RunnableConfig = {"configurable": {"thread_id": uuid.uuid4().hex, "checkpoint_ns": ""}}
    for n, metadata in enumerate(FILTER_METADATA, start=1):
        await saver.aput(config, plain_checkpoint(n), dict(metadata), {})
        await model.aput(config, plain_checkpoint(n), dict(metadata), {})

    expected = [comparable(t) async for t in model.alist(config, filter=filter)]
    assert expected, "every filter here matches something in InMemorySaver"
    assert [comparable(t) async for t in saver.alist(config, filter=filter)] == expected
    assert [comparable(t) async for t in saver.alist(None, filter=filter)] == expected


@pytest.mark.parametrize(
    "metadata",
    [
        {"source": "input", "step": -1, "tag": {"k": "a\x00b"}},
        {"source": "input", "step": -1, "tag": ["\x00"]},
        {"source": "input", "step": -1, "tag": "\ud800"},
    ],
    ids=["nul-in-nested-string", "nul-in-list", "lone-surrogate"],
)
async def test_metadata_json_cannot_hold_is_stored_like_in_memory_saver(
    make_saver: SaverFactory, metadata: dict[str, Any]
) -> None:
    """InMemorySaver (and the SQLite backend) store any metadata the serde can serialize."""
    saver, model = await make_saver(), InMemorySaver()
    config: RunnableConfig = {"configurable": {"thread_id": uuid.uuid4().hex, "checkpoint_ns": ""}}
    await model.aput(config, plain_checkpoint(1), dict(metadata), {})

    await saver.aput(config, plain_checkpoint(1), dict(metadata), {})

    stored = await saver.aget_tuple(config)
    assert stored is not None
    assert comparable(stored) == comparable(await model.aget_tuple(config))
    assert [comparable(t) async for t in saver.alist(config, filter={"source": "input"})] == [
        comparable(stored)
    ]
    # (The serde may not round-trip every string exactly: compare with the model.)
    for filter in ({"tag": metadata["tag"]}, {"tag": stored.metadata["tag"]}):
        expected = [comparable(t) async for t in model.alist(config, filter=filter)]
        assert [comparable(t) async for t in saver.alist(config, filter=filter)] == expected


async def test_repeated_put_after_prune_changes_nothing(make_saver: SaverFactory) -> None:
    """A stored checkpoint is immutable: repeating its put (a retry) must not change what any
    read returns, even after ``prune`` unlinked it from its deleted parent."""
    saver = await make_saver()
    root: RunnableConfig = {"configurable": {"thread_id": uuid.uuid4().hex, "checkpoint_ns": ""}}
    first = await saver.aput(root, plain_checkpoint(1), {"step": 0}, {})
    head_put = (first, plain_checkpoint(2), {"step": 1}, {})
    await saver.aput(*head_put)
    await saver.aprune([root["configurable"]["thread_id"]], strategy="keep_latest")
    pruned = await saver.aget_tuple(root)
    assert pruned is not None
    assert pruned.parent_config is None

    await saver.aput(*head_put)

    head = await saver.aget_tuple(root)
    listed = [comparable(t) async for t in saver.alist(root)]
    assert comparable(head) == comparable(pruned)
    assert listed == [comparable(pruned)]
    other = await make_saver()
    assert comparable(await other.aget_tuple(root)) == comparable(pruned)
