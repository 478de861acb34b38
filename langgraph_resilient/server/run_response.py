"""The HTTP responses of runs: ``runs/stream``'s events and ``runs/wait``'s result.

Both notice a client that disconnects (its run is cancelled, or left to finish with
``on_disconnect="continue"``) with one plain asyncio task waiting for ``http.disconnect``.
Starlette's ``StreamingResponse`` does that, on uvicorn, with an anyio task group and cancel
scopes around every response, and sends one body message per event through every middleware,
which showed in the server's profile under load (docs/server.md, Benchmark). Here the events
queued by the time the response writes go out as one chunk, and the last chunk also ends the
response.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.responses import Response

from langgraph_resilient.server import serde
from langgraph_resilient.server.runs import RunHandle
from langgraph_resilient.server.stream import sse

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

KEEPALIVE_S = 5.0
"""``runs/wait`` sends a newline this often while the run goes on (JSON ignores it), as
LangGraph Server does, so proxies do not cut an idle connection."""


async def _disconnected(receive: Receive) -> None:
    # The request body was read before the run started: what comes next is the disconnect.
    while (await receive())["type"] != "http.disconnect":
        pass


class RunResponse(Response):
    """A run's response, written while the run goes on (status 200 once it started)."""

    def __init__(self, handle: RunHandle, media_type: str, headers: dict[str, str]) -> None:
        self.handle = handle
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handle = self.handle
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        watcher = asyncio.ensure_future(_disconnected(receive))

        def on_watcher_done(task: asyncio.Future[None]) -> None:
            if not task.cancelled():
                handle.client_gone()

        watcher.add_done_callback(on_watcher_done)
        finished = False
        try:
            body = await self.body_until_last(send, watcher)
            if body is not None:
                # Before the last message: once the response is complete, uvicorn's receive()
                # answers http.disconnect too, which is no client leaving.
                watcher.remove_done_callback(on_watcher_done)
                watcher.cancel()
                await send({"type": "http.response.body", "body": body, "more_body": False})
                finished = True
        finally:
            watcher.remove_done_callback(on_watcher_done)
            watcher.cancel()
            if not finished:  # the client went away (or the server is stopping)
                handle.detach(cancel=handle.plan.cancel_on_disconnect)

    async def body_until_last(self, send: Send, watcher: asyncio.Future[None]) -> bytes | None:
        """Send the body but its last chunk, and return that (None: the client is gone)."""
        raise NotImplementedError


async def _chunk(send: Send, body: bytes) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": True})


class StreamResponse(RunResponse):
    """``runs/stream``: server-sent events, as the run makes them."""

    def __init__(self, handle: RunHandle, headers: dict[str, str]) -> None:
        super().__init__(handle, "text/event-stream", {**headers, "Cache-Control": "no-store"})

    async def body_until_last(self, send: Send, watcher: asyncio.Future[None]) -> bytes | None:
        while True:
            events, ended = await self.handle.next_events()
            if watcher.done():
                return None
            body = b"".join([sse(event, data) for event, data in events])
            if ended:
                return body
            await _chunk(send, body)


class WaitResponse(RunResponse):
    """``runs/wait``: the run's final values (or ``__error__``), keep-alive newlines before."""

    def __init__(self, handle: RunHandle, headers: dict[str, str]) -> None:
        super().__init__(handle, "application/json", headers)

    async def body_until_last(self, send: Send, watcher: asyncio.Future[None]) -> bytes | None:
        handle = self.handle
        task = handle.task
        assert task is not None
        while True:
            done, _ = await asyncio.wait(
                (task, watcher), timeout=KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED
            )
            if watcher in done:
                return None
            if task in done:
                break
            await _chunk(send, b"\n")
        with contextlib.suppress(asyncio.CancelledError):
            task.result()
        result: Any = handle.result
        if handle.status == "cancelled" and result is None:
            result = {"__error__": {"error": "CancelledError", "message": "run cancelled"}}
        return serde.dumps(result if result is not None else {})
