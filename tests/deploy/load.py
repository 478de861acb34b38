"""Load from real langgraph-sdk clients, and the check that the store holds what they were told.

Each client worker creates a thread and runs the ``tally`` graph (tests/deploy/graphs.py) on
it with ``runs.wait``, one run at a time, at most one run every ``interval_s``, each with a
marker of its own. After a failed request the worker moves to a new thread: a replica killed
during a run leaves the thread's lease behind until its TTL ends. Afterwards
:func:`check_store` reads every thread back and checks each run's steps.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.deploy.graphs import STEPS
from tests.server.conftest import sdk


@dataclass
class Request:
    """One request a client worker sent: a run (``marker`` set) or a thread creation."""

    kind: str
    thread_id: str | None
    marker: str | None
    started: float
    ended: float = 0.0
    error: str | None = None
    """None: it succeeded. Else the HTTP status (``"503"``) or the exception's type."""
    retry_after: str | None = None


@dataclass
class Load:
    """``workers`` clients sending ``tally`` runs to ``url`` until :meth:`stop`."""

    url: str
    api_key: str
    workers: int = 6
    interval_s: float = 0.5
    delay_s: float = 0.1
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        # Clients are made here, in the caller's environment (SSL_CERT_FILE for nginx's TLS).
        clients = [sdk(self.url, api_key=self.api_key) for _ in range(self.workers)]
        self._tasks = [asyncio.create_task(self._worker(c)) for c in clients]

    async def stop(self) -> None:
        """Let every worker finish its request in flight, then return."""
        self._stop.set()
        await asyncio.gather(*self._tasks)

    @property
    def runs(self) -> list[Request]:
        return [r for r in self.requests if r.kind == "run"]

    @property
    def failed(self) -> list[Request]:
        return [r for r in self.requests if r.error is not None]

    async def _send(self, request: Request, call: Any) -> Any:
        self.requests.append(request)
        try:
            return await call
        except httpx.HTTPStatusError as error:
            request.error = str(error.response.status_code)
            request.retry_after = error.response.headers.get("retry-after")
        except httpx.HTTPError as error:
            request.error = type(error).__name__
        finally:
            request.ended = time.monotonic()
        return None

    async def _worker(self, client: Any) -> None:
        thread_id: str | None = None
        next_start = time.monotonic()
        try:
            while not self._stop.is_set():
                await asyncio.sleep(max(0.0, next_start - time.monotonic()))
                if self._stop.is_set():
                    break
                next_start = time.monotonic() + self.interval_s
                if thread_id is None:
                    created = await self._send(
                        Request("thread", None, None, time.monotonic()), client.threads.create()
                    )
                    thread_id = created["thread_id"] if created else None
                    continue
                marker = uuid.uuid4().hex[:12]
                request = Request("run", thread_id, marker, time.monotonic())
                body = {"run": marker, "delay": self.delay_s}
                result = await self._send(request, client.runs.wait(thread_id, "tally", input=body))
                if request.error is not None:
                    thread_id = None  # a new thread: this one may hold a dead replica's lease
                elif result["log"][-len(STEPS) :] != [f"{marker}:{s}" for s in STEPS]:
                    request.error = f"wrong result {result!r}"
        finally:
            await client.aclose()


@dataclass
class StoreCheck:
    """What the threads hold, by run outcome as the clients saw it."""

    succeeded: int
    """Runs that returned success: each is in its thread with all its steps."""
    failed_complete: int
    """Failed requests whose run completed anyway (the replica died before answering)."""
    failed_partial: int
    """Failed requests whose run stopped after some steps (its checkpoints are kept)."""
    failed_absent: int
    """Failed requests that left nothing (refused, or killed before the first step)."""
    threads: int


async def check_store(url: str, api_key: str, requests: list[Request]) -> StoreCheck:
    """Read every thread the runs used back through ``url`` (a surviving replica) and check:
    each succeeded run has all its steps, in order, once; no run has a step twice (nothing
    ran twice, whatever was retried); no run is there that no client sent; each thread's
    history is one line of checkpoints (no fork)."""
    client = sdk(url, api_key=api_key)
    runs = [r for r in requests if r.kind == "run"]
    by_thread: dict[str, list[Request]] = defaultdict(list)
    for run in runs:
        assert run.thread_id is not None
        by_thread[run.thread_id].append(run)
    outcome = {"complete": 0, "partial": 0, "absent": 0}
    try:
        for thread_id, sent in by_thread.items():
            state = await client.threads.get_state(thread_id)
            steps: dict[str, list[str]] = defaultdict(list)
            for entry in state["values"].get("log", []):
                marker, _, step = entry.partition(":")
                steps[marker].append(step)
            markers = {r.marker for r in sent}
            assert set(steps) <= markers, (thread_id, set(steps) - markers)
            for marker, done in steps.items():
                assert tuple(done) == STEPS[: len(done)], (thread_id, marker, done)
            for run in sent:
                done = steps.get(run.marker or "", [])
                if run.error is None:
                    assert tuple(done) == STEPS, (thread_id, run, done)
                elif tuple(done) == STEPS:
                    outcome["complete"] += 1
                else:
                    outcome["partial" if done else "absent"] += 1
            await _check_linear(client, thread_id)
    finally:
        await client.aclose()
    return StoreCheck(
        succeeded=sum(1 for r in runs if r.error is None),
        failed_complete=outcome["complete"],
        failed_partial=outcome["partial"],
        failed_absent=outcome["absent"],
        threads=len(by_thread),
    )


async def _check_linear(client: Any, thread_id: str) -> None:
    history = await client.threads.get_history(thread_id, limit=1000)
    ids = [h["checkpoint"]["checkpoint_id"] for h in history]
    assert len(ids) == len(set(ids)), thread_id
    for newer, older in itertools.pairwise(history):
        parent = newer["parent_checkpoint"]["checkpoint_id"]
        assert parent == older["checkpoint"]["checkpoint_id"], thread_id


def in_flight_at(request: Request, moment: float) -> bool:
    """Whether ``request`` was sent before ``moment`` and answered after it."""
    return request.started <= moment <= request.ended
