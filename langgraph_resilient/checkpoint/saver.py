"""``ResilientSaver``: LangGraph's ``BaseCheckpointSaver`` over a durable store.

The async methods are the implementation; every sync method runs its async twin on the saver's
home loop through :class:`LoopBridge`, so there is one code path for both.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from langgraph_resilient.checkpoint import codec, history, redis_conn
from langgraph_resilient.checkpoint.batcher import Batch, GroupCommitter, WritesOp
from langgraph_resilient.checkpoint.bridge import LoopBridge
from langgraph_resilient.checkpoint.cache import LocalCache
from langgraph_resilient.checkpoint.lease import ThreadLock, release_held_leases
from langgraph_resilient.checkpoint.locator import Locator, configurable, thread_id_of
from langgraph_resilient.checkpoint.records import (
    EMPTY_BLOB_TYPE,
    BlobRecord,
    CheckpointRecord,
    CheckpointRow,
    ListQuery,
    WriteRecord,
)
from langgraph_resilient.checkpoint.redis_conn import RedisSettings
from langgraph_resilient.checkpoint.redis_tier import DeferredPublication, RedisTier
from langgraph_resilient.checkpoint.settings import (
    PostgresSettings,
    SaverSettings,
    default_sqlite_path,
    redact,
)
from langgraph_resilient.checkpoint.store import DurableStore, Skeleton
from langgraph_resilient.errors import (
    ConfigurationError,
    DurableWriteError,
    ResilientError,
    TierUnavailableError,
    describe_error,
)
from langgraph_resilient.observability import metrics

T = TypeVar("T")

PRUNE_STRATEGIES = ("keep_latest", "delete")


class ResilientSaver(
    BaseCheckpointSaver[str],
    AbstractContextManager["ResilientSaver"],
    AbstractAsyncContextManager["ResilientSaver"],
):
    """A LangGraph checkpointer on Postgres (asyncpg) or an embedded SQLite file.

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
        cache_max_bytes: int = 64 * 1024 * 1024,
        redis_required: bool = False,
    ) -> None:
        super().__init__(serde=serde)
        self.store = store
        self.settings = settings or SaverSettings()
        self.redis_settings = redis
        self.cache_max_bytes = cache_max_bytes
        self.redis_required = redis_required
        self._tier: RedisTier | None = None
        # Threads this process leases in Redis, whose publication waits for the release.
        self._deferred: dict[str, DeferredPublication] = {}
        self._committer = GroupCommitter(self._flush, max_inflight=store.write_parallelism)
        self._fenced_committer = GroupCommitter(
            self._flush_fenced, max_inflight=store.write_parallelism
        )
        self._bridge = LoopBridge()
        # Epochs of the thread leases this process holds (see lock_thread): every write to one of
        # these threads is fenced with its epoch.
        self._leases: dict[str, int] = {}
        self.redis: Any = None
        """The Redis client (``redis.asyncio``) of the Redis tier, or ``None`` without one."""

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
    ) -> ResilientSaver:
        """Build a saver from connection URLs. Nothing connects until the saver is entered.

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
            write_attempts: Attempts of a durable write on connection failures.
            write_retry_deadline_s: No write retry starts after this many seconds.
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

        Raises:
            ConfigurationError: Both durable tiers, an empty or malformed URL (the message
                names the setting and masks the password) or an invalid setting.
        """
        settings = SaverSettings(
            prefix=prefix,
            max_payload_bytes=max_payload_bytes,
            write_attempts=write_attempts,
            write_retry_deadline_s=write_retry_deadline_s,
            migrate_on_enter=migrate_on_enter,
            plaintext_metadata=plaintext_metadata,
        )
        if sqlite_path is not None and not sqlite_path.strip():
            raise ConfigurationError(
                "sqlite_path is empty: give a file path such as state.db, or leave it unset "
                "for the default"
            )
        if postgres_url is not None and sqlite_path is not None:
            raise ConfigurationError(
                "give either postgres_url or sqlite_path, not both: the durable tier is one "
                "database"
            )
        store: DurableStore
        if postgres_url is not None:
            from langgraph_resilient.checkpoint.postgres import PostgresStore

            store = PostgresStore(
                PostgresSettings(
                    url=postgres_url,
                    min_size=pool_min_size,
                    max_size=pool_max_size,
                    connect_timeout_s=connect_timeout_s,
                    command_timeout_s=command_timeout_s,
                    pgbouncer=pgbouncer,
                ),
                prefix=prefix,
            )
        else:
            from langgraph_resilient.checkpoint.sqlite import SqliteStore

            store = SqliteStore(
                sqlite_path or default_sqlite_path(),
                prefix=prefix,
                synchronous=sqlite_synchronous,
                busy_timeout_s=command_timeout_s,
            )
        redis = (
            RedisSettings(
                url=redis_url,
                socket_timeout_s=redis_socket_timeout_s,
                key_ttl_s=redis_key_ttl_s,
                repair_interval_s=redis_repair_interval_s,
            )
            if redis_url is not None
            else None
        )
        return cls(
            store,
            settings=settings,
            serde=serde,
            redis=redis,
            cache_max_bytes=cache_max_bytes,
            redis_required=redis_required,
        )

    # ------------------------------------------------------------------ lifecycle

    async def _open(self) -> None:
        await self.store.open()
        try:
            if self.settings.migrate_on_enter:
                await self._with_retry("migrate", self.store.migrate, write=False)
            else:
                await self._check_schema()
            if self.redis_settings is not None:
                await self._open_redis(self.redis_settings)
        except BaseException:
            await self.store.close()
            raise

    async def _open_redis(self, settings: RedisSettings) -> None:
        client = redis_conn.connect(settings)
        tier = RedisTier(
            client,
            settings,
            prefix=self.settings.prefix,
            cache=LocalCache(self.cache_max_bytes),
            store=self.store,
        )
        try:
            async with asyncio.timeout(settings.connect_timeout_s * 2):
                await client.ping()
            async with asyncio.timeout(settings.connect_timeout_s * 2):
                await tier.connect()
        except Exception as exc:
            why = redis_conn.why_not_connected(exc, settings)
            if self.redis_required:
                await tier.stop()
                raise TierUnavailableError(
                    "redis", f"cannot connect to {redact(settings.url)}: {why}"
                ) from exc
            logging.getLogger("langgraph_resilient.redis").warning(
                "cannot use Redis at %s, starting without it (it is used once it answers): %s",
                redact(settings.url),
                why,
            )
            tier.breaker.trip()
            metrics.CHECKPOINT_REDIS_AVAILABLE.set(0)
        tier.start()
        self._tier = tier
        self.redis = client

    async def _close(self) -> None:
        """Release what is still held, stop every background task and close the tiers. Each
        step is bounded in time, so closing never hangs whatever a server does."""
        try:
            await release_held_leases(self)
        finally:
            tier, self._tier = self._tier, None
            self.redis = None
            try:
                if tier is not None:
                    await tier.stop()
            finally:
                await self.store.close()

    async def _check_schema(self) -> None:
        from langgraph_resilient.checkpoint.schema import check_version

        found = await self._with_retry("schema_version", self.store.schema_version, write=False)
        check_version(self.store.tier, found)

    async def __aenter__(self) -> ResilientSaver:
        self._bridge.attach(asyncio.get_running_loop())
        try:
            await self._open()
        except BaseException:
            self._bridge.detach()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._close()
        finally:
            self._bridge.detach()

    def __enter__(self) -> ResilientSaver:
        self._bridge.start_thread()
        try:
            self._bridge.run(self._open())
        except BaseException:
            self._bridge.stop_thread()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._bridge.run(self._close())
        finally:
            self._bridge.stop_thread()

    # ------------------------------------------------------------------ helpers

    @property
    def _plaintext_metadata(self) -> bool:
        flag = self.settings.plaintext_metadata
        return not codec.encrypts(self.serde) if flag is None else flag

    async def _with_retry(self, op: str, call: Callable[[], Awaitable[T]], *, write: bool) -> T:
        """Run a store call, retrying connection failures a bounded number of times.

        Whatever the store raises reaches the caller as one of the saver's typed errors: its own
        (a stale lease, a forked history) as they are, anything else as
        :class:`DurableWriteError` (writes: nothing was stored, the statement rolled back) or
        :class:`TierUnavailableError` (reads), with the driver's error as the cause.
        """
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                with metrics.timed_op(op, self.store.tier):
                    return await call()
            except ResilientError:
                raise
            except Exception as exc:
                transient = self.store.is_transient(exc)
                elapsed = time.monotonic() - started
                if (
                    not transient
                    or attempt >= self.settings.write_attempts
                    or elapsed >= self.settings.write_retry_deadline_s
                ):
                    error = DurableWriteError if write else TierUnavailableError
                    tried = f" after {attempt} attempt(s) in {elapsed:.1f}s" if transient else ""
                    raise error(
                        self.store.tier,
                        f"{op} failed{tried}: {describe_error(exc)}. "
                        + (
                            "Nothing was stored; the step can be resumed once the database is back."
                            if write
                            else "Check that the database is reachable."
                        ),
                    ) from exc
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0) * (0.5 + random.random()))

    def _to_tuple(self, row: CheckpointRow) -> CheckpointTuple:
        serde = self.serde
        checkpoint: Checkpoint = codec.load(serde, row.body)
        checkpoint["channel_values"] = {
            channel: codec.load(serde, (typ, data)) for channel, typ, data in row.blobs
        }
        loc = Locator(row.thread_id, row.checkpoint_ns, row.checkpoint_id)
        writes = sorted(row.writes, key=lambda w: writes_sort_key(w.task_path, w.task_id, w.idx))
        return CheckpointTuple(
            config=loc.config(),
            checkpoint=checkpoint,
            metadata=codec.load(serde, row.metadata),
            parent_config=loc.config(row.parent_id) if row.parent_id else None,
            pending_writes=[
                (w.task_id, w.channel, codec.load(serde, (w.type, w.data))) for w in writes
            ],
        )

    def _checkpoint_record(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> CheckpointRecord:
        loc = Locator.of(config)
        serde = self.serde
        if not isinstance(checkpoint, dict) or "id" not in checkpoint:
            raise ConfigurationError("checkpoint must be a LangGraph Checkpoint dict with an id")
        values = checkpoint.get("channel_values", {})
        body = {k: v for k, v in checkpoint.items() if k != "channel_values"}
        meta = get_serializable_checkpoint_metadata(config, metadata)
        blobs = []
        for channel, version in new_versions.items():
            if channel in values:
                typ, data = codec.dump(serde, values[channel], f"channel {channel!r}")
                blobs.append(BlobRecord(channel, str(version), typ, data))
            else:
                blobs.append(BlobRecord(channel, str(version), EMPTY_BLOB_TYPE, None))
        body_typed = codec.dump(serde, body, "checkpoint")
        meta_typed = codec.dump(serde, meta, "checkpoint metadata")
        size = len(body_typed[1]) + len(meta_typed[1]) + sum(len(b.data or b"") for b in blobs)
        codec.check_size(size, self.settings.max_payload_bytes, f"checkpoint {checkpoint['id']}")
        return CheckpointRecord(
            thread_id=loc.thread_id,
            checkpoint_ns=loc.checkpoint_ns,
            checkpoint_id=str(checkpoint["id"]),
            parent_id=loc.checkpoint_id,
            body=body_typed,
            metadata=meta_typed,
            metadata_json=codec.metadata_json(dict(meta)) if self._plaintext_metadata else None,
            run_key=codec.run_key(meta.get("run_id")),
            channel_versions={k: str(v) for k, v in checkpoint["channel_versions"].items()},
            blobs=blobs,
            epoch=self._leases.get(loc.thread_id),
        )

    def _write_records(
        self, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
    ) -> list[WriteRecord]:
        # One record per (task_id, idx): a repeated special channel keeps its last value,
        # as a second put_writes call would.
        serde = self.serde
        by_idx: dict[int, WriteRecord] = {}
        for idx, (channel, value) in enumerate(writes):
            key = WRITES_IDX_MAP.get(channel, idx)
            typ, data = codec.dump(serde, value, f"write to {channel!r}")
            by_idx[key] = WriteRecord(str(task_id), key, channel, typ, data, task_path)
        records = list(by_idx.values())
        size = sum(len(r.data) for r in records)
        codec.check_size(size, self.settings.max_payload_bytes, f"writes of task {task_id}")
        return records

    # ------------------------------------------------------------------ async API

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Fetch a checkpoint (the thread's newest when the config names no checkpoint_id)."""
        loc = Locator.of(config)
        row = await self._bridge.hop(self._get_row(loc))
        return None if row is None else self._to_tuple(row)

    async def _get_row(self, loc: Locator) -> CheckpointRow | None:
        """L1 and Redis in one round trip when they hold it; else the durable tier (then
        filling the caches on the way back)."""
        tier = self._tier
        lookup = None
        if tier is not None:
            lookup = await tier.read(loc.thread_id, loc.checkpoint_ns, loc.checkpoint_id)
            if lookup.row is not None:
                metrics.CHECKPOINT_CACHE_READS.labels("hit").inc()
                return lookup.row
            metrics.CHECKPOINT_CACHE_READS.labels("miss").inc()
        row = await self._with_retry(
            "get_tuple",
            lambda: self.store.get_checkpoint(loc.thread_id, loc.checkpoint_ns, loc.checkpoint_id),
            write=False,
        )
        if row is not None and tier is not None and lookup is not None and lookup.gen is not None:
            await tier.fill(row, lookup.gen, head=loc.checkpoint_id is None)
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
        query = self._list_query(config, filter, before, limit)
        if query is None:
            return
        matched = 0
        cursor: tuple[str, str, str] | None = None
        page_size = self.settings.list_page_size
        if limit is not None and not filter:
            page_size = min(page_size, limit)
        while True:
            rows = await self._bridge.hop(self._list_page(query, cursor, page_size))
            for row in rows:
                tup = self._to_tuple(row)
                if filter and not _matches(tup.metadata, filter):
                    continue
                yield tup
                matched += 1
                if limit is not None and matched >= limit:
                    return
            if len(rows) < page_size:
                return
            last = rows[-1]
            cursor = (last.checkpoint_id, last.thread_id, last.checkpoint_ns)

    def _list_query(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> ListQuery | None:
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise ConfigurationError(f"limit must be a non-negative int, got {limit!r}")
        if filter is not None and not isinstance(filter, dict):
            raise ConfigurationError("filter must be a dict of metadata key -> value")
        if limit == 0:
            return None
        thread_id = ns = cid = None
        if config is not None:
            conf = configurable(config)
            if conf.get("thread_id") is not None:
                loc = Locator.of(config)
                thread_id, cid = loc.thread_id, loc.checkpoint_id
            ns = conf.get("checkpoint_ns")
        before_id = Locator.of(before).checkpoint_id if before is not None else None
        return ListQuery(thread_id, ns, cid, before_id, filter or None)

    async def _list_page(
        self, query: ListQuery, cursor: tuple[str, str, str] | None, size: int
    ) -> list[CheckpointRow]:
        return await self._with_retry(
            "list", lambda: self.store.list_page(query, cursor, size), write=False
        )

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint and the channel values in ``new_versions``, in one transaction."""
        record = self._checkpoint_record(config, checkpoint, metadata, new_versions)
        await self._bridge.hop(self._put(record))
        return Locator(record.thread_id, record.checkpoint_ns, None).config(record.checkpoint_id)

    async def _put(self, record: CheckpointRecord) -> None:
        if record.epoch is None:
            await self._committer.submit(record)
        else:
            await self._fenced_committer.submit(record)

    async def _flush_fenced(self, batch: Batch) -> None:
        """Group commit of fenced writes: one statement checks every thread's fence and every
        namespace's head and writes all or nothing; a refused batch is replayed write by write
        by the committer, so each writer gets its own ``StaleLeaseError``/``ForkedHistoryError``.
        """
        if len(batch) == 1:
            if batch.checkpoints:
                record = batch.checkpoints[0]
                inserted = await self._with_retry(
                    "put", lambda: self.store.put_checkpoint(record), write=True
                )
                await self._after_fenced_put(record, inserted)
            else:
                op = batch.writes[0]
                assert op.epoch is not None
                epoch = op.epoch
                stored_keys = await self._with_retry(
                    "put_writes",
                    lambda: self.store.put_writes(
                        op.thread_id, op.checkpoint_ns, op.checkpoint_id, op.writes, epoch
                    ),
                    write=True,
                )
                await self._after_fenced_writes(op, stored_keys)
            return
        stored = await self._with_retry(
            "fenced batch", lambda: self.store.write_fenced_batch(batch), write=True
        )
        for record in batch.checkpoints:
            key = (record.thread_id, record.checkpoint_ns, record.checkpoint_id)
            await self._after_fenced_put(record, key in stored.checkpoints)
        by_head: dict[tuple[str, str, str], set[tuple[str, int]]] = {}
        for tid, ns, cid, task_id, idx in stored.writes:  # once, not once per op
            by_head.setdefault((tid, ns, cid), set()).add((task_id, idx))
        for op in batch.writes:
            head = (op.thread_id, op.checkpoint_ns, op.checkpoint_id)
            await self._after_fenced_writes(op, by_head.get(head, set()))

    async def _after_fenced_put(self, record: CheckpointRecord, inserted: bool) -> None:
        tier = self._tier
        if tier is None:
            return
        if not inserted:  # stored before, maybe changed since (a prune): never cache it as sent
            deferred = self._deferred.get(record.thread_id)
            if deferred is not None:
                deferred.failed = True  # its release must not publish an older head instead
            await tier.invalidate([record.thread_id])
            return
        deferred = await self._deferring(tier, record.thread_id)
        if deferred is not None:
            deferred.add_checkpoint(record)
            tier.hold_locally(deferred, record)
            return
        await tier.after_put(record)

    async def _deferring(self, tier: RedisTier, thread_id: str) -> DeferredPublication | None:
        """The deferred publication of a thread this process leases in Redis, withdrawing its
        cached entries at the first write; None: publish this write now."""
        deferred = self._deferred.get(thread_id)
        if deferred is None or deferred.failed:
            return None
        if not deferred.in_redis():
            deferred.failed = True  # the lease moved to the durable store: publish per write
            return None
        if deferred.gen is None:
            # Concurrent writes of one step (a put and put_writes) withdraw only once.
            async with deferred.withdrawing:
                if deferred.gen is None and not await tier.withdraw(thread_id, deferred):
                    deferred.failed = True
                    return None
        return None if deferred.failed else deferred

    def _lease_acquired(self, thread_id: str, in_redis: Callable[[], bool]) -> None:
        """Called by the lease once held: with the lease in Redis, the holder publishes to
        Redis once, at release, instead of at every write."""
        if self._tier is not None and in_redis():
            self._deferred[thread_id] = DeferredPublication(in_redis=in_redis)

    async def _lease_releasing(self, thread_id: str, *, lost: bool) -> None:
        """Called by the lease before it lets go of its Redis key: publish what was deferred."""
        deferred = self._deferred.pop(thread_id, None)
        tier = self._tier
        if deferred is None or tier is None or deferred.failed or lost:
            return
        try:
            await tier.publish_deferred(thread_id, deferred)
        except Exception:  # the lease must be released whatever happens here
            logging.getLogger("langgraph_resilient.redis").exception(
                "publishing thread %r at lease release failed", thread_id
            )
            await tier.mark_dirty([thread_id])

    async def _flush(self, batch: Batch) -> None:
        """Group commit: a batch of plain writes in one transaction, then in Redis."""
        op = " + ".join(
            name
            for name, part in (("put", batch.checkpoints), ("put_writes", batch.writes))
            if part
        )
        stored = await self._with_retry(op, lambda: self.store.write_batch(batch), write=True)
        if self._tier is not None:
            await self._tier.after_batch(batch, stored)

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
        records = self._write_records(writes, task_id, task_path)
        if not records:
            return
        assert loc.checkpoint_id is not None
        cid = loc.checkpoint_id
        await self._bridge.hop(self._put_writes(loc.thread_id, loc.checkpoint_ns, cid, records))

    async def _put_writes(
        self, thread_id: str, ns: str, cid: str, records: list[WriteRecord]
    ) -> None:
        epoch = self._leases.get(thread_id)
        if epoch is None:
            await self._committer.submit(WritesOp(thread_id, ns, cid, records))
            return
        await self._fenced_committer.submit(WritesOp(thread_id, ns, cid, records, epoch))

    async def _after_fenced_writes(self, op: WritesOp, stored: set[tuple[str, int]]) -> None:
        tier = self._tier
        # a repeated regular write keeps its first value: only what was stored is published
        changed = [r for r in op.writes if (r.task_id, r.idx) in stored]
        if tier is None or not changed:
            return
        deferred = await self._deferring(tier, op.thread_id)
        if deferred is not None:
            deferred.add_writes(op.checkpoint_ns, op.checkpoint_id, changed)
            return
        await tier.after_put_writes(op.thread_id, op.checkpoint_ns, op.checkpoint_id, changed)

    async def _rewrite(self, op: str, call: Callable[[], Awaitable[T]], threads: list[str]) -> T:
        """A history-changing write, then the cache tiers of ``threads`` invalidated everywhere."""
        result = await self._with_retry(op, call, write=True)
        if self._tier is not None:
            await self._tier.invalidate(threads)
        return result

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, value and write of a thread, in all namespaces."""
        tid = thread_id_of(thread_id)
        await self._bridge.hop(
            self._rewrite("delete_thread", lambda: self.store.delete_thread(tid), [tid])
        )

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) created by the given runs."""
        keys = [k for k in (codec.run_key(r) for r in run_ids) if k]
        if not keys:
            return
        await self._bridge.hop(self._delete_for_runs(keys))

    async def _delete_for_runs(self, run_keys: list[str]) -> None:
        threads = await self._with_retry(
            "delete_for_runs", lambda: self.store.delete_for_runs(run_keys), write=True
        )
        if self._tier is not None:
            await self._tier.invalidate(threads)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy a thread's whole history (every namespace, value and write) to another id."""
        src, dst = thread_id_of(source_thread_id), thread_id_of(target_thread_id)
        if src == dst:
            raise ConfigurationError("copy_thread needs two different thread ids")
        await self._bridge.hop(
            self._rewrite("copy_thread", lambda: self.store.copy_thread(src, dst), [dst])
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
                await self._bridge.hop(self._keep_latest(tid))

    async def _keep_latest(self, thread_id: str) -> None:
        skeletons = await self._with_retry(
            "prune", lambda: self.store.skeletons(thread_id), write=False
        )
        if not skeletons:
            return

        def head_channels(head: Skeleton) -> set[str]:
            return history.delta_channels(codec.load(self.serde, head.metadata))

        heads: dict[str, Skeleton] = {}
        for sk in skeletons:
            best = heads.get(sk.checkpoint_ns)
            if best is None or sk.checkpoint_id > best.checkpoint_id:
                heads[sk.checkpoint_ns] = sk
        channels: set[str] = set()
        for head in heads.values():
            channels |= head_channels(head)
        seeded = (
            await self._with_retry(
                "prune",
                lambda: self.store.seeded_versions(thread_id, sorted(channels)),
                write=False,
            )
            if channels
            else set()
        )
        doomed = history.plan_keep_latest(skeletons, head_channels, seeded)
        if doomed:
            await self._rewrite(
                "prune", lambda: self.store.delete_checkpoints(thread_id, doomed), [thread_id]
            )

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
        cutoff = time.time() - older_than.total_seconds()
        pruned, after = 0, ""
        while True:
            batch = await self._bridge.hop(
                self._with_retry(
                    "retention",
                    functools.partial(self.store.threads_older_than, cutoff, after, batch_size),
                    write=False,
                )
            )
            if not batch:
                return pruned
            await self.aprune(batch, strategy=strategy)
            pruned += len(batch)
            after = batch[-1]

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """Writes and seed of each channel along the parent chain, in one database query."""
        if not channels:
            return {}
        loc = Locator.of(config)
        chans = list(channels)
        links = await self._bridge.hop(
            self._with_retry(
                "get_delta_channel_history",
                lambda: self.store.parent_chain(
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

        Yields a :class:`~langgraph_resilient.checkpoint.lease.Lease` with its fencing epoch.
        While it is held, every write this saver makes to the thread is fenced: if another
        worker takes the lease over (this one stalled past ``ttl_s``), this worker's writes are
        refused with ``StaleLeaseError`` and write nothing.

        Raises:
            LockTimeoutError: The lease could not be had within ``wait_s``.
        """
        return ThreadLock(self, thread_id_of(thread_id), ttl_s=ttl_s, wait_s=wait_s)

    # ------------------------------------------------------------------ sync API

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Sync :meth:`aget_tuple`."""
        return self._bridge.run(self.aget_tuple(config))

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
                    yield self._bridge.run(_anext(agen))
                except StopAsyncIteration:
                    return
        finally:
            self._bridge.run(agen.aclose())

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Sync :meth:`aput`."""
        return self._bridge.run(self.aput(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Sync :meth:`aput_writes`."""
        self._bridge.run(self.aput_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        """Sync :meth:`adelete_thread`."""
        self._bridge.run(self.adelete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Sync :meth:`adelete_for_runs`."""
        self._bridge.run(self.adelete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Sync :meth:`acopy_thread`."""
        self._bridge.run(self.acopy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Sync :meth:`aprune`."""
        self._bridge.run(self.aprune(thread_ids, strategy=strategy))

    def prune_older_than(
        self, older_than: timedelta, *, strategy: str = "delete", batch_size: int = 500
    ) -> int:
        """Sync :meth:`aprune_older_than`."""
        return self._bridge.run(
            self.aprune_older_than(older_than, strategy=strategy, batch_size=batch_size)
        )

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """Sync :meth:`aget_delta_channel_history`."""
        return self._bridge.run(self.aget_delta_channel_history(config=config, channels=channels))

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


def _matches(metadata: Mapping[str, Any], filter: Mapping[str, Any]) -> bool:
    return all(metadata.get(k) == v for k, v in filter.items())
