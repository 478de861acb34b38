"""``ResilientSaver``: LangGraph's ``BaseCheckpointSaver`` over the tiers.

This module is LangGraph's API (async, and the sync surface that runs it on the saver's home
loop through :class:`~langgraph_resilient._bridge.LoopBridge`: one code path for both), the
saver's lifecycle and its read path. Writes go through :mod:`.writes` (and :mod:`.fenced` under
a lease), the stores are in :mod:`.durable`, the Redis tier and L1 in :mod:`.cache`, the lease
in :mod:`.lease`; ``docs/architecture.md`` follows a ``put`` and a ``get_tuple`` through them.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from langgraph_resilient._bridge import LoopBridge
from langgraph_resilient._redis.client import RedisSettings
from langgraph_resilient.checkpoint import codec, factory, history, listing
from langgraph_resilient.checkpoint.convert import checkpoint_record, to_tuple, write_records
from langgraph_resilient.checkpoint.durable.retrying import Retrying
from langgraph_resilient.checkpoint.durable.store import DurableStore
from langgraph_resilient.checkpoint.fenced import FencedWrites
from langgraph_resilient.checkpoint.lease.lock import ThreadLock
from langgraph_resilient.checkpoint.locator import Locator, list_query, matches, thread_id_of
from langgraph_resilient.checkpoint.pruning import PRUNE_STRATEGIES, idle_threads, keep_latest
from langgraph_resilient.checkpoint.records import CheckpointRow, ListQuery
from langgraph_resilient.checkpoint.settings import (
    PostgresSettings,
    SaverSettings,
    SqliteSettings,
)
from langgraph_resilient.checkpoint.tiers import Tiers
from langgraph_resilient.checkpoint.writes import WritePath
from langgraph_resilient.errors import ConfigurationError
from langgraph_resilient.observability import metrics

T = TypeVar("T")


class ResilientSaver(
    BaseCheckpointSaver[str],
    AbstractContextManager["ResilientSaver"],
    AbstractAsyncContextManager["ResilientSaver"],
):
    """A LangGraph checkpointer on Postgres (asyncpg) or an embedded SQLite file, with Redis
    and an in-process cache in front of it when given a ``redis_url``.

    Create it with :meth:`from_urls` and use it as a context manager: ``async with`` in async
    programs (``graph.ainvoke``/``astream``), plain ``with`` in sync programs
    (``graph.invoke``/``stream``). Pass it to ``builder.compile(checkpointer=saver)``.

    Every ``put`` and ``put_writes`` is one transaction and is safe to repeat. Connection
    failures on writes are retried a bounded number of times, then raise
    :class:`~langgraph_resilient.DurableWriteError`; an unacknowledged write is never reported
    as stored.
    """

    def __init__(
        self,
        store: DurableStore,
        *,
        settings: SaverSettings | None = None,
        serde: SerializerProtocol | None = None,
        redis: RedisSettings | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self.settings = settings or SaverSettings()
        self.redis_settings = redis
        self.tiers = Tiers(
            store, Retrying(store, self.settings), LoopBridge(), prefix=self.settings.prefix
        )
        """What the saver is made of (for diagnostics and tests: not a stable API)."""
        self.fenced = FencedWrites(self.tiers)
        """The writes of the leases this process holds (for diagnostics and tests)."""
        self._writes = WritePath(self.tiers, self.fenced)

    @property
    def store(self) -> DurableStore:
        """The durable tier (``PostgresStore`` or ``SqliteStore``)."""
        return self.tiers.store

    @property
    def redis(self) -> Any:
        """The Redis client (``redis.asyncio``) of the Redis tier while the saver is open, or
        ``None`` without one."""
        tier = self.tiers.redis
        return None if tier is None else tier.link.client

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_urls(
        cls,
        *,
        postgres_url: str | None = None,
        redis_url: str | None = None,
        sqlite_path: str | None = None,
        serde: SerializerProtocol | None = None,
        prefix: str = "lgr_",
        max_payload_bytes: int = 32 * 1024 * 1024,
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        connect_timeout_s: float = 5.0,
        command_timeout_s: float = 30.0,
        pgbouncer: bool = False,
        write_attempts: int = 3,
        write_retry_deadline_s: float = 10.0,
        migrate_on_enter: bool = True,
        plaintext_metadata: bool | None = None,
        sqlite_synchronous: str = "FULL",
        cache_max_bytes: int = 64 * 1024 * 1024,
        redis_socket_timeout_s: float = 0.25,
        redis_key_ttl_s: int = 7 * 24 * 3600,
        redis_repair_interval_s: float = 1.0,
        redis_required: bool = False,
        compression: str | None = None,
        compression_min_bytes: int = 1024,
        postgres: PostgresSettings | None = None,
        sqlite: SqliteSettings | None = None,
        redis: RedisSettings | None = None,
        settings: SaverSettings | None = None,
    ) -> ResilientSaver:
        """Build a saver from connection URLs (or settings objects). Nothing connects until the
        saver is entered.

        Args:
            postgres_url: ``postgresql://user:pass@host:5432/db`` (TLS via ``?sslmode=...``).
                The production durable tier.
            redis_url: Adds the shared cache tier and the in-process cache:
                ``redis://``, ``rediss://``, ``redis+sentinel://host:26379/service`` or
                ``redis+cluster://host:7000``. Plain Redis or Valkey, no modules.
            sqlite_path: A SQLite file for the embedded tier. Without ``postgres_url``, the
                file ``LANGGRAPH_RESILIENT_SQLITE_PATH`` or ``./langgraph_state.db`` is used
                (with ``redis_url`` too, Redis and the in-process cache sit in front of it, so
                several processes on one machine share the cache).
            serde: Serializer (default: LangGraph's ``JsonPlusSerializer``). An
                ``EncryptedSerializer`` encrypts every stored value and the metadata.
            prefix: Prefix of every table name; lets apps share one database.
            max_payload_bytes: Largest serialized ``put``/``put_writes`` accepted.
            pool_min_size: Minimum Postgres pool connections.
            pool_max_size: Maximum Postgres pool connections.
            connect_timeout_s: Connect timeout; entering fails fast after it.
            command_timeout_s: Per-statement timeout on Postgres.
            pgbouncer: Set when connecting through pgbouncer in transaction mode: the saver
                then keeps no server-side prepared statements.
            write_attempts: Attempts of each call to the durable store (reads too) on
                connection failures, before ``DurableWriteError``/``TierUnavailableError``.
            write_retry_deadline_s: No retry of a store call starts after this many seconds.
            migrate_on_enter: Apply schema migrations on enter (else just check the version;
                run ``langgraph-resilient migrate`` yourself).
            plaintext_metadata: Keep a plaintext JSON copy of metadata for server-side
                filtering. Default: yes unless ``serde`` is an ``EncryptedSerializer``.
            sqlite_synchronous: SQLite ``PRAGMA synchronous`` (``FULL`` survives power loss,
                ``NORMAL`` only process crashes).
            cache_max_bytes: Bound of the in-process cache (used with ``redis_url``).
            redis_socket_timeout_s: A Redis round trip longer than twice this (connecting
                included) counts as a Redis failure; after two in a row the saver stops using
                Redis until it answers again.
            redis_key_ttl_s: Expiry of cached entries in Redis.
            redis_repair_interval_s: How often this replica repairs the cache entries of
                threads that a replica wrote while it could not reach Redis.
            redis_required: Fail on enter when Redis cannot be reached (default: start
                without it and use it once it answers).
            compression: ``"zstd"`` compresses stored values of at least
                ``compression_min_bytes`` on every tier (``None``: off); readable either way.
            compression_min_bytes: Smallest serialized value worth compressing.
            postgres: A :class:`PostgresSettings` instead of ``postgres_url`` and the pool
                arguments.
            sqlite: A :class:`SqliteSettings` instead of ``sqlite_path`` and its arguments.
            redis: A ``RedisSettings`` instead of ``redis_url`` and the ``redis_*`` timings.
            settings: A :class:`SaverSettings` instead of ``prefix``, ``max_payload_bytes``,
                the retry, migration, metadata and cache arguments.

        Raises:
            ConfigurationError: Both durable tiers, an empty or malformed URL (the message
                names the setting and masks the password) or an invalid setting.
        """
        factory.one_of("postgres", postgres_url, postgres)
        factory.one_of("sqlite", sqlite_path, sqlite)
        factory.one_of("redis", redis_url, redis)
        if postgres_url is not None:
            postgres = PostgresSettings(
                url=postgres_url,
                min_size=pool_min_size,
                max_size=pool_max_size,
                connect_timeout_s=connect_timeout_s,
                command_timeout_s=command_timeout_s,
                pgbouncer=pgbouncer,
            )
        if sqlite_path is not None:
            sqlite = SqliteSettings(
                sqlite_path, synchronous=sqlite_synchronous, busy_timeout_s=command_timeout_s
            )
        if redis_url is not None:
            redis = RedisSettings(
                url=redis_url,
                socket_timeout_s=redis_socket_timeout_s,
                key_ttl_s=redis_key_ttl_s,
                repair_interval_s=redis_repair_interval_s,
            )
        if settings is None:
            settings = SaverSettings(
                prefix=prefix,
                max_payload_bytes=max_payload_bytes,
                write_attempts=write_attempts,
                write_retry_deadline_s=write_retry_deadline_s,
                migrate_on_enter=migrate_on_enter,
                plaintext_metadata=plaintext_metadata,
                cache_max_bytes=cache_max_bytes,
                redis_required=redis_required,
                compression=compression,
                compression_min_bytes=compression_min_bytes,
            )
        parts = factory.resolve(postgres=postgres, sqlite=sqlite, redis=redis, settings=settings)
        return cls(parts.store, settings=parts.settings, serde=serde, redis=parts.redis)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> ResilientSaver:
        bridge = self.tiers.bridge
        bridge.attach(asyncio.get_running_loop())
        try:
            await self.tiers.open(self.settings, self.redis_settings)
        except BaseException:
            bridge.detach()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.tiers.close()
        finally:
            self.tiers.bridge.detach()

    def __enter__(self) -> ResilientSaver:
        bridge = self.tiers.bridge
        bridge.start_thread()
        try:
            bridge.run(self.tiers.open(self.settings, self.redis_settings))
        except BaseException:
            bridge.stop_thread()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        bridge = self.tiers.bridge
        try:
            bridge.run(self.tiers.close())
        finally:
            bridge.stop_thread()

    # ------------------------------------------------------------------ reads

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Fetch a checkpoint (the thread's newest when the config names no checkpoint_id)."""
        loc = Locator.of(config)
        row = await self.tiers.bridge.hop(self._get_row(loc))
        return None if row is None else to_tuple(self.serde, row)

    async def _get_row(self, loc: Locator) -> CheckpointRow | None:
        """L1 and Redis in one round trip when they hold it; else the durable tier (then
        filling the caches on the way back)."""
        tier = self.tiers.redis
        lookup = None
        if tier is not None:
            deferred = self.fenced.deferred_of(loc.thread_id)
            lookup = await tier.look_up(
                loc.thread_id, loc.checkpoint_ns, loc.checkpoint_id, deferred
            )
            if lookup.row is not None:
                metrics.CHECKPOINT_CACHE_READS.labels("hit").inc()
                return lookup.row
            metrics.CHECKPOINT_CACHE_READS.labels("miss").inc()
        store = self.tiers.store
        row = await self.tiers.retrying(
            "get_tuple",
            lambda: store.get_checkpoint(loc.thread_id, loc.checkpoint_ns, loc.checkpoint_id),
            write=False,
        )
        if row is not None and tier is not None and lookup is not None:
            await tier.fill(row, lookup, head=loc.checkpoint_id is None)
        return row

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncGenerator[CheckpointTuple, None]:
        """List checkpoints newest first, by thread/namespace, metadata ``filter``,
        ``before`` a checkpoint, up to ``limit``."""
        query = list_query(config, filter, before, limit)
        if query is None:
            return
        matched = 0
        cursor: tuple[str, str, str] | None = None
        page_size = self.settings.list_page_size
        if limit is not None and not filter:
            page_size = min(page_size, limit)
        while True:
            rows = await self.tiers.bridge.hop(self._list_page(query, cursor, page_size))
            for row in rows:
                tup = to_tuple(self.serde, row)
                if filter and not matches(tup.metadata, filter):
                    continue
                yield tup
                matched += 1
                if limit is not None and matched >= limit:
                    return
            if len(rows) < page_size:
                return
            last = rows[-1]
            cursor = (last.checkpoint_id, last.thread_id, last.checkpoint_ns)

    async def _list_page(
        self, query: ListQuery, cursor: tuple[str, str, str] | None, size: int
    ) -> list[CheckpointRow]:
        if cursor is None and listing.servable(self.tiers, query):
            return await listing.history_page(self.tiers, self.fenced, query, size)
        store = self.tiers.store
        return await self.tiers.retrying(
            "list", lambda: store.list_page(query, cursor, size), write=False
        )

    # ------------------------------------------------------------------ writes

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint and the channel values in ``new_versions``, in one transaction."""
        record = checkpoint_record(
            self.serde,
            self.settings,
            config,
            checkpoint,
            metadata,
            new_versions,
            self.fenced.epoch_of,
        )
        await self.tiers.bridge.hop(self._writes.put(record))
        return Locator(record.thread_id, record.checkpoint_ns, None).config(record.checkpoint_id)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's pending writes for a checkpoint, in one transaction.

        Regular writes keep the first value stored for ``(task_id, idx)``; the special channels
        (error, interrupt, resume, scheduled) overwrite.
        """
        loc = Locator.of(config, need_checkpoint_id=True)
        records = write_records(self.serde, self.settings, writes, task_id, task_path)
        if not records:
            return
        assert loc.checkpoint_id is not None
        put = self._writes.put_writes(loc.thread_id, loc.checkpoint_ns, loc.checkpoint_id, records)
        await self.tiers.bridge.hop(put)

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, value and write of a thread, in all namespaces."""
        tid = thread_id_of(thread_id)
        store = self.tiers.store
        await self.tiers.bridge.hop(
            self._writes.rewrite("delete_thread", lambda: store.delete_thread(tid), [tid])
        )

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) created by the given runs."""
        keys = [k for k in (codec.run_key(r) for r in run_ids) if k]
        if not keys:
            return
        await self.tiers.bridge.hop(self._delete_for_runs(keys))

    async def _delete_for_runs(self, run_keys: list[str]) -> None:
        store = self.tiers.store
        threads = await self.tiers.retrying(
            "delete_for_runs", lambda: store.delete_for_runs(run_keys), write=True
        )
        await self._writes.invalidate(threads)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy a thread's whole history (every namespace, value and write) to another id."""
        src, dst = thread_id_of(source_thread_id), thread_id_of(target_thread_id)
        if src == dst:
            raise ConfigurationError("copy_thread needs two different thread ids")
        store = self.tiers.store
        await self.tiers.bridge.hop(
            self._writes.rewrite("copy_thread", lambda: store.copy_thread(src, dst), [dst])
        )

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Prune threads: ``"keep_latest"`` keeps each namespace's newest checkpoint (and, for
        ``DeltaChannel`` state, the ancestors back to a stored snapshot); ``"delete"`` removes
        the threads."""
        if strategy not in PRUNE_STRATEGIES:
            raise ConfigurationError(
                f"unknown prune strategy {strategy!r}; use one of {PRUNE_STRATEGIES}"
            )
        tids = [thread_id_of(t) for t in thread_ids]
        for tid in tids:
            if strategy == "delete":
                await self.adelete_thread(tid)
            else:
                await self.tiers.bridge.hop(keep_latest(self.tiers, self._writes, self.serde, tid))

    async def aprune_older_than(
        self,
        older_than: timedelta,
        *,
        strategy: str = "delete",
        batch_size: int = 500,
    ) -> int:
        """Apply a retention policy: prune every thread whose newest checkpoint is older than
        ``older_than``, in batches of ``batch_size`` threads (each batch is a bounded query
        plus one prune per thread). Returns how many threads were pruned.

        ``strategy`` is ``"delete"`` (drop the thread) or ``"keep_latest"`` (keep only its
        newest checkpoints), as in :meth:`aprune`. Safe to run from several replicas at once
        and to interrupt: every prune is a transaction and a re-run picks up where it stopped.
        """
        if older_than.total_seconds() <= 0:
            raise ConfigurationError("older_than must be a positive duration")
        if batch_size < 1:
            raise ConfigurationError("batch_size must be >= 1")
        if strategy not in PRUNE_STRATEGIES:
            raise ConfigurationError(
                f"unknown prune strategy {strategy!r}; use one of {PRUNE_STRATEGIES}"
            )
        pruned = 0
        async for batch in idle_threads(self.tiers, older_than, batch_size):
            await self.aprune(batch, strategy=strategy)
            pruned += len(batch)
        return pruned

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """Writes and seed of each channel along the parent chain, in one database query."""
        if not channels:
            return {}
        loc = Locator.of(config)
        chans = list(channels)
        links = await self.tiers.bridge.hop(
            self.tiers.retrying(
                "get_delta_channel_history",
                lambda: self.tiers.store.parent_chain(
                    loc.thread_id, loc.checkpoint_ns, loc.checkpoint_id, chans
                ),
                write=False,
            )
        )
        return history.assemble_delta_history(
            links, chans, lambda typed: codec.load(self.serde, typed)
        )

    # ------------------------------------------------------------------ thread lease

    def lock_thread(
        self, thread_id: str, *, ttl_s: float = 30.0, wait_s: float = 10.0
    ) -> ThreadLock:
        """Hold the single-writer lease of a thread: ``async with`` or ``with``.

        Yields a :class:`~langgraph_resilient.Lease` with its fencing epoch. While it is held,
        every write this saver makes to the thread is fenced: if another worker takes the lease
        over (this one stalled past ``ttl_s``), this worker's writes are refused with
        ``StaleLeaseError`` and write nothing.

        Raises:
            LockTimeoutError: The lease could not be had within ``wait_s``.
        """
        return ThreadLock(
            self.tiers, self.fenced, thread_id_of(thread_id), ttl_s=ttl_s, wait_s=wait_s
        )

    # ------------------------------------------------------------------ sync API
    # Each runs its async twin on the saver's home loop (LoopBridge.run): one implementation.

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Sync :meth:`aget_tuple`."""
        return self.tiers.bridge.run(self.aget_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Sync :meth:`alist` (pages are fetched lazily)."""
        agen = self.alist(config, filter=filter, before=before, limit=limit)
        try:
            while True:
                try:
                    yield self.tiers.bridge.run(_anext(agen))
                except StopAsyncIteration:
                    return
        finally:
            self.tiers.bridge.run(agen.aclose())

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Sync :meth:`aput`."""
        return self.tiers.bridge.run(self.aput(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Sync :meth:`aput_writes`."""
        self.tiers.bridge.run(self.aput_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        """Sync :meth:`adelete_thread`."""
        self.tiers.bridge.run(self.adelete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Sync :meth:`adelete_for_runs`."""
        self.tiers.bridge.run(self.adelete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Sync :meth:`acopy_thread`."""
        self.tiers.bridge.run(self.acopy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Sync :meth:`aprune`."""
        self.tiers.bridge.run(self.aprune(thread_ids, strategy=strategy))

    def prune_older_than(
        self, older_than: timedelta, *, strategy: str = "delete", batch_size: int = 500
    ) -> int:
        """Sync :meth:`aprune_older_than`."""
        return self.tiers.bridge.run(
            self.aprune_older_than(older_than, strategy=strategy, batch_size=batch_size)
        )

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """Sync :meth:`aget_delta_channel_history`."""
        return self.tiers.bridge.run(
            self.aget_delta_channel_history(config=config, channels=channels)
        )

    def get_next_version(self, current: str | None, channel: None) -> str:
        """Monotonic, zero-padded string versions (sortable as text)."""
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(current.split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"


async def _anext(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()
