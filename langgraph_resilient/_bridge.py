"""Runs the saver's async implementation from sync callers, and from foreign event loops.

The saver has one home event loop: the caller's loop for ``async with``, or a private
background thread's loop for plain ``with``. Connection pools belong to that loop, so every call
is executed there. A blocking call made *on* the home loop would wait for itself forever, so it
is refused with :class:`SyncCallOnEventLoopError` instead.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from langgraph_resilient.errors import SaverClosedError, SyncCallOnEventLoopError

T = TypeVar("T")


class LoopBridge:
    """Owns (or borrows) the event loop the saver's connections live on."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Adopt the caller's running loop as home (``async with``)."""
        self.loop = loop

    def start_thread(self) -> None:
        """Start a private daemon thread running a fresh loop (``with``)."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="langgraph-resilient-io", daemon=True)
        self._thread.start()
        ready.wait()
        self.loop = loop

    def stop_thread(self) -> None:
        """Stop and join the private loop thread, if there is one."""
        loop, thread = self.loop, self._thread
        self.loop, self._thread = None, None
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()

    def detach(self) -> None:
        """Forget a borrowed loop (``async with`` exit)."""
        if self._thread is None:
            self.loop = None

    def _home(self) -> asyncio.AbstractEventLoop:
        if self.loop is None or self.loop.is_closed():
            raise SaverClosedError(
                "the saver is not open: use it inside `with ResilientSaver.from_urls(...)` "
                "or `async with ResilientSaver.from_urls(...)`"
            )
        return self.loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the home loop and block until it finishes (sync callers)."""
        try:
            home = self._home()
        except SaverClosedError:
            coro.close()
            raise
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is home:
            coro.close()
            raise SyncCallOnEventLoopError(
                "a blocking saver method was called on the event loop the saver runs on, where "
                "waiting would deadlock; from async code use the async methods: graph.ainvoke, "
                "astream, aget_state, aget_state_history, aupdate_state (saver: aget_tuple, "
                "aput, alist, ...)"
            )
        return asyncio.run_coroutine_threadsafe(coro, home).result()

    async def hop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the home loop, from whatever loop the caller runs on."""
        try:
            home = self._home()
        except SaverClosedError:
            coro.close()
            raise
        if asyncio.get_running_loop() is home:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, home))
