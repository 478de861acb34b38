"""The resources of one server process: saver, thread records, graphs, runs, drain state."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import threading
from contextlib import AsyncExitStack
from typing import Any

from langgraph_resilient.checkpoint import ResilientSaver
from langgraph_resilient.server import metrics
from langgraph_resilient.server.graphs import GraphRegistry
from langgraph_resilient.server.runs import RunManager
from langgraph_resilient.server.settings import ServerSettings
from langgraph_resilient.server.thread_stores import thread_store_for
from langgraph_resilient.server.threads import SERVER_SCHEMA_VERSION, ThreadStore

log = logging.getLogger("langgraph_resilient.server")


class ServerContext:
    """Opened by the app's lifespan; closed (after a drain) when it ends."""

    def __init__(
        self, settings: ServerSettings, *, handle_sigterm: bool = True, freeze_gc: bool = False
    ) -> None:
        self.settings = settings
        self.handle_sigterm = handle_sigterm
        self.freeze_gc = freeze_gc
        self.saver: ResilientSaver | None = None
        self.fork_saver: ResilientSaver | None = None
        self.threads: ThreadStore = thread_store_for(
            settings.postgres_url, settings.sqlite_path, settings.prefix
        )
        self.registry: GraphRegistry | None = None
        self.runs: RunManager | None = None
        self.draining = False
        self._stack = AsyncExitStack()
        self._drained: asyncio.Event | None = None
        self._previous_handler: Any = None

    async def start(self) -> None:
        saver = ResilientSaver.from_urls(
            **self.settings.saver_kwargs(), pool_max_size=self.settings.pool_max_size
        )
        self.saver = await self._stack.enter_async_context(saver)
        # A second saver on the same database, for time travel (see ServedGraph.forking): its
        # writes carry no lease epoch, so they may start a branch at an older checkpoint.
        fork_saver = ResilientSaver.from_urls(
            **self.settings.saver_kwargs(), pool_min_size=0, pool_max_size=2
        )
        self.fork_saver = await self._stack.enter_async_context(fork_saver)
        await self.threads.open()
        self._stack.push_async_callback(self.threads.close)
        await self.threads.migrate()
        self.registry = await GraphRegistry.load(
            self.settings.graphs, self.settings.base_dir, self.saver, self.fork_saver
        )
        self.runs = RunManager(
            saver=self.saver,
            threads=self.threads,
            registry=self.registry,
            lease_ttl_s=self.settings.lease_ttl_s,
            enqueue_wait_s=self.settings.enqueue_wait_s,
            cancel_on_disconnect=self.settings.cancel_on_disconnect,
        )
        metrics.install_event_metrics()
        if self.handle_sigterm:
            self._install_sigterm()
        if self.freeze_gc:
            # What is alive now lives as long as the process: full collections need not scan
            # it again and again (see create_app).
            gc.collect()
            gc.freeze()

    def _install_sigterm(self) -> None:
        # Drain first, then hand the signal to the server (uvicorn), which stops accepting
        # connections and runs the lifespan shutdown. Only the main thread gets signals.
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGTERM)
        self._previous_handler = previous

        def on_sigterm(sig: int, frame: Any) -> None:
            if self.draining:
                return
            self.draining = True
            log.warning("SIGTERM: draining (not ready; new runs get 503)")

            async def drain_then_exit() -> None:
                await self.drain()
                signal.signal(signal.SIGTERM, previous)
                if callable(previous):
                    previous(sig, frame)

            loop.call_soon_threadsafe(lambda: loop.create_task(drain_then_exit()))

        signal.signal(signal.SIGTERM, on_sigterm)

    async def drain(self) -> None:
        """Stop taking runs and let the in-flight ones finish (see ``RunManager.drain``)."""
        self.draining = True
        if self._drained is None:
            self._drained = asyncio.Event()
            if self.runs is not None:
                await self.runs.drain(self.settings.drain_grace_s)
            self._drained.set()
        await self._drained.wait()

    async def stop(self) -> None:
        try:
            await self.drain()
        finally:
            await self._stack.aclose()
            metrics.mark_worker_dead()

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether this replica should get traffic, and why."""
        checks: dict[str, Any] = {"draining": self.draining}
        ready = not self.draining
        try:
            await asyncio.wait_for(self.threads.ping(), timeout=2.0)
            version = await asyncio.wait_for(self.threads.schema_version(), timeout=2.0)
            checks[self.threads.tier_name] = "ok"
            checks["schema"] = "ok" if version == SERVER_SCHEMA_VERSION else f"v{version}"
            ready = ready and version == SERVER_SCHEMA_VERSION
        except Exception as exc:
            checks[self.threads.tier_name] = f"unreachable: {type(exc).__name__}"
            ready = False
        if self.settings.redis_url:
            checks["redis"] = "ok" if await self._redis_ok() else "degraded"
        return ready, checks

    async def _redis_ok(self) -> bool:
        client = getattr(self.saver, "redis", None)
        if client is None:
            return False
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.ping(), timeout=0.5)
            return True
        return False
