"""Two replicas in two processes over one Redis and one Postgres take turns on the same
threads, each reading through its own warm caches: every turn sees the previous one, and a
delete on one is seen by the other."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    POSTGRES_URL,
    REDIS_URL,
    drop_prefixed_keys,
    drop_prefixed_tables,
    unique_prefix,
)

ROOT = Path(__file__).resolve().parents[3]


class Replica:
    def __init__(self, prefix: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.checkpoint.cache.replica", POSTGRES_URL, REDIS_URL,
             prefix],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        assert json.loads(self._line()) == {"ready": True}

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"replica exited with {self.proc.poll()}"
        return line

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self._line())
        return answer

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def replicas() -> Iterator[tuple[Replica, Replica]]:
    prefix = unique_prefix()
    one = Replica(prefix)
    two = Replica(prefix)
    try:
        yield one, two
    finally:
        one.close()
        two.close()
        asyncio.run(drop_prefixed_tables(POSTGRES_URL, prefix))
        asyncio.run(drop_prefixed_keys(REDIS_URL, prefix))


def test_alternating_turns_and_deletes_across_processes(
    replicas: tuple[Replica, Replica],
) -> None:
    threads = ["a", "b", "c"]
    for n in range(10):
        for i, thread in enumerate(threads):
            replica = replicas[(n + i) % 2]
            # read first (warms this replica's caches), then run the turn
            before = replica.ask(op="state", thread=thread)["count"]
            assert before == 2 * n, f"turn {n} on {thread}: saw {before} messages"
            after = replica.ask(op="turn", thread=thread, n=n)
            assert after["count"] == 2 * (n + 1)
            assert after["last"] == [f"reply to {2 * n + 1}"]
    one, two = replicas
    assert two.ask(op="state", thread="a")["count"] == 20
    assert one.ask(op="delete", thread="a")["count"] == 0
    assert two.ask(op="state", thread="a")["count"] == 0, "the delete is seen by the other"
    assert two.ask(op="state", thread="b")["count"] == 20
    assert one.ask(op="turn", thread="a", n=0)["count"] == 2, "the thread starts afresh"
    assert two.ask(op="state", thread="a")["count"] == 2
