"""A client that disconnects from ``runs/stream`` or ``runs/wait`` cancels its run and the
thread's lease is released; ``on_disconnect="continue"`` lets the run finish. Against a real
uvicorn process, through langgraph-sdk (the client goes away by closing its connection)."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx
import pytest

from tests.server.conftest import ServeProcess, sdk

pytestmark = pytest.mark.timeout(120)

STEP_S = 1.5
"""Each step of the ``slow`` graph sleeps this long: far longer than noticing a disconnect, so
a run cancelled when its client left never finishes its first step."""


async def _cancelled_runs(url: str) -> float:
    """``langgraph_runs_total{assistant="slow",status="cancelled"}`` on the server."""
    async with httpx.AsyncClient(base_url=url) as http:
        text = (await http.get("/metrics")).text
    found = re.search(
        r'^langgraph_runs_total\{assistant="slow",status="cancelled"\} (\S+)$', text, re.M
    )
    return float(found.group(1)) if found else 0.0


async def _until_not_busy(client: Any, thread_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        thread: dict[str, Any] = await client.threads.get(thread_id)
        if thread["status"] != "busy" or time.monotonic() > deadline:
            return thread
        await asyncio.sleep(0.05)


async def _log(client: Any, thread_id: str) -> list[str]:
    state = await client.threads.get_state(thread_id)
    return list(state["values"].get("log", []))


async def _leave_stream_early(
    client: Any, thread_id: str, delay: float = STEP_S, **kwargs: Any
) -> None:
    """Start a stream, read its first event, and close the connection."""
    stream = client.runs.stream(
        thread_id, "slow", input={"delay": delay}, stream_mode="values", **kwargs
    )
    first = await anext(stream)
    assert first.event == "metadata"
    await stream.aclose()


async def _check_cancelled_at_once(
    client: Any, url: str, thread_id: str, cancelled_before: float
) -> None:
    """The run was cancelled when its client left, within its first step (which wrote
    nothing), and released the thread's lease."""
    thread = await _until_not_busy(client, thread_id, timeout_s=STEP_S)
    assert thread["status"] != "busy", thread
    assert await _cancelled_runs(url) == cancelled_before + 1
    # A run that refuses to wait for the lease gets the thread, and the log is its own alone.
    done = await client.runs.wait(
        thread_id, "slow", input={"delay": 0.0}, multitask_strategy="reject"
    )
    assert done["log"] == ["first", "second", "third"], done


async def test_stream_disconnect_cancels_the_run(server: ServeProcess) -> None:
    client = sdk(server.url)
    thread_id = (await client.threads.create())["thread_id"]
    before = await _cancelled_runs(server.url)
    await _leave_stream_early(client, thread_id)
    await _check_cancelled_at_once(client, server.url, thread_id, before)


async def test_wait_disconnect_cancels_the_run(server: ServeProcess) -> None:
    impatient = sdk(server.url, timeout=httpx.Timeout(5.0, read=STEP_S / 2))
    client = sdk(server.url)
    thread_id = (await client.threads.create())["thread_id"]
    before = await _cancelled_runs(server.url)
    with pytest.raises(httpx.ReadTimeout):
        await impatient.runs.wait(thread_id, "slow", input={"delay": STEP_S})
    await impatient.aclose()  # the timed-out connection is closed: the client is gone
    await _check_cancelled_at_once(client, server.url, thread_id, before)


async def test_continue_on_disconnect_finishes_the_run(server: ServeProcess) -> None:
    client = sdk(server.url)
    thread_id = (await client.threads.create())["thread_id"]
    await _leave_stream_early(client, thread_id, delay=0.3, on_disconnect="continue")
    assert (await client.threads.get(thread_id))["status"] == "busy"  # still running
    thread = await _until_not_busy(client, thread_id, timeout_s=10.0)
    assert thread["status"] == "idle", thread
    assert await _log(client, thread_id) == ["first", "second", "third"]
