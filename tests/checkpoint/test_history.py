"""The keep-latest prune planner: it keeps each namespace's head and, for delta channels, the
ancestors back to a stored value, and nothing else."""

from __future__ import annotations

from langgraph_resilient.checkpoint.durable.store import Skeleton
from langgraph_resilient.checkpoint.history import plan_keep_latest


def _chain(ns: str, ids: list[str], versions: dict[str, list[str]] | None = None) -> list[Skeleton]:
    out = []
    for i, cid in enumerate(ids):
        chans = {ch: vs[i] for ch, vs in (versions or {}).items()}
        out.append(Skeleton(ns, cid, ids[i - 1] if i else None, ("json", b"{}"), chans))
    return out


def test_without_delta_channels_only_each_head_is_kept() -> None:
    skeletons = _chain("", ["1", "2", "3"]) + _chain("sub", ["4", "5"])
    assert plan_keep_latest(skeletons, lambda head: set(), set()) == {
        "": ["1", "2"],
        "sub": ["4"],
    }


def test_delta_channels_keep_the_ancestors_back_to_a_seed() -> None:
    skeletons = _chain("", ["1", "2", "3", "4"], {"msgs": ["v1", "v2", "v3", "v4"]})
    seeded = {("", "msgs", "v2")}  # checkpoint 2 stored a snapshot of the channel
    doomed = plan_keep_latest(skeletons, lambda head: {"msgs"}, seeded)
    assert doomed == {"": ["1"]}, "2, 3 and 4 are needed to rebuild msgs"


def test_a_channel_with_no_seed_keeps_the_whole_chain_and_a_seeded_head_keeps_itself() -> None:
    skeletons = _chain("", ["1", "2", "3"], {"msgs": ["v1", "v2", "v3"]})
    assert plan_keep_latest(skeletons, lambda head: {"msgs"}, set()) == {}
    seeded_head = {("", "msgs", "v3")}
    assert plan_keep_latest(skeletons, lambda head: {"msgs"}, seeded_head) == {"": ["1", "2"]}


def test_an_empty_thread_has_nothing_to_delete() -> None:
    assert plan_keep_latest([], lambda head: set(), set()) == {}
