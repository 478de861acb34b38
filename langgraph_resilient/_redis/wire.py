"""The Redis tier's script calls: pipelined on one connection, packed and parsed here.

Every tier operation is one or more ``EVALSHA`` calls in one round trip. Through redis-py's
pipeline such a round trip costs about 115-135 µs of CPU on this project's 2-core machines,
most of it per-argument encoding, a task per timeout and connection-pool bookkeeping; packed
here and sent on a dedicated connection it costs about 40 µs (measured with the same script
and payload). At 13 Redis round trips per 5-node invocation that difference is most of what the
Redis tier added to an invocation.

:class:`WireScripts` borrows only the connection set-up from redis-py (the client pool's
connection class and arguments do TLS, AUTH, SELECT and, for Sentinel, find the current
master), then writes RESP itself and reads replies with one reader task. Calls from concurrent
coroutines share the connection: Redis answers in order, so replies are matched to a FIFO of
futures, and a caller that gives up (a timeout or a cancellation) leaves its reply to be read
and dropped. Each new connection first reads the server's ``run_id`` (and loads every script
the process knows, so a restarted or promoted server never refuses part of a batch): a caller
composes its keys for one server identity, and a call meant for another server is refused
(:class:`ServerChanged`) rather than sent, because a restarted or promoted server may lack
writes the old one acknowledged.

A call refused with ``NOSCRIPT`` did not run; the calls around it in the batch did. Only the
refused calls are sent again, after their scripts are loaded: several scripts (the lease's
epoch counter, the generation bumps) must never run twice. Their replies take the refused
calls' places, so the caller sees every reply in the order of its calls. Only a ``SCRIPT
FLUSH`` on a live connection can refuse part of a batch, and then the refused calls run after
the ones that followed them; every batch the tier composes is a set of publications to distinct
keys, or of idempotent fills, whose order does not matter.

Redis Cluster has no single connection; :class:`PipelineScripts` runs the same calls through
redis-py's cluster pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ReadOnlyError, RedisError, ResponseError
from redis.maint_notifications import MaintNotificationsConfig

from langgraph_resilient._aio import stop_tasks

_log = logging.getLogger("langgraph_resilient.redis")

ScriptCall = tuple["LuaScript", Sequence[str], Sequence[Any]]
"""One script call: the script, its keys, its arguments."""


class LuaScript:
    """A Lua script and its SHA1, as the server knows it after ``SCRIPT LOAD``.

    Every script made is remembered, so that a new connection loads them all before its first
    call (see :class:`WireScripts`).
    """

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        _KNOWN_SCRIPTS.setdefault(self.sha, self)


_KNOWN_SCRIPTS: dict[str, LuaScript] = {}
"""Every script this process made, by SHA1 (a few dozen at most: they are module constants)."""

_RELOADS = 3
"""How many times a call refused with NOSCRIPT is sent again (each time after loading its
script): more than once only if the script cache is flushed again meanwhile."""


class ServerChanged(RedisError):
    """The runner is connected to another Redis server than the caller composed its keys for
    (a restart or a failover: writes the old server acknowledged may be lost)."""

    def __init__(self, server_id: str) -> None:
        super().__init__(f"Redis server is now {server_id}")
        self.server_id = server_id


class ScriptRunner(Protocol):
    """Runs script calls in one round trip; raises ``RedisError``/``OSError``/``TimeoutError``
    when Redis fails or does not answer within the runner's time limit.

    ``expect`` is the server identity the caller composed its keys for: when the runner is
    connected to another server, it sends nothing and raises :class:`ServerChanged`.
    """

    async def run(self, calls: Sequence[ScriptCall], expect: str | None) -> list[Any]: ...

    async def commands(self, commands: Sequence[Sequence[Any]], expect: str | None) -> list[Any]:
        """Plain commands (``("INCR", key)``) in one round trip."""
        ...

    async def identify(self) -> str:
        """Connect if needed; the identity of the server the next call goes to."""
        ...

    async def close(self) -> None: ...


# ------------------------------------------------------------------------------- RESP


def as_text(reply: Any) -> str:
    """A reply (bytes from the wire, or an int) as text."""
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _bulk(value: Any) -> bytes:
    kind = type(value)  # exact types first: this runs for every argument of every call
    if kind is bytes:
        data = value
    elif kind is str:
        data = value.encode()
    elif kind is int or kind is float:
        data = repr(value).encode()
    elif isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    elif isinstance(value, str):
        data = str(value).encode()
    else:
        raise TypeError(f"cannot send {type(value).__name__} to Redis")
    return b"$%d\r\n%b\r\n" % (len(data), data)


def encode_command(*args: Any) -> bytes:
    """One command as a RESP array of bulk strings."""
    return b"*%d\r\n" % len(args) + b"".join([_bulk(a) for a in args])


def encode_evalsha(sha: str, keys: Sequence[str], args: Sequence[Any]) -> bytes:
    """``EVALSHA sha numkeys key... arg...`` as RESP."""
    head = b"*%d\r\n$7\r\nEVALSHA\r\n" % (len(keys) + len(args) + 3)
    parts = [head, _bulk(sha), _bulk(len(keys)), *[_bulk(k) for k in keys]]
    parts += [_bulk(a) for a in args]
    return b"".join(parts)


_ERRORS: dict[str, type[ResponseError]] = {"NOSCRIPT": NoScriptError, "READONLY": ReadOnlyError}
"""Error replies the runner acts on, by their first word."""


class _Incomplete(Exception):
    """The buffer ends before the reply does."""


def parse_reply(buf: bytes | bytearray, pos: int) -> tuple[Any, int]:
    """One RESP2 reply starting at ``pos``: ``(value, position after it)``; raises
    ``_Incomplete`` when the buffer ends first.

    Bulk and simple strings come back as ``bytes``, integers as ``int``, nil as ``None``,
    arrays as ``list``, and an error reply as a :class:`ResponseError` *value* (not raised), so
    one failing call of a pipeline does not hide the replies after it.
    """
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind = buf[pos]
    if kind == 36:  # '$' bulk string
        size = int(buf[pos + 1 : end])
        if size < 0:
            return None, end + 2
        stop = end + 2 + size
        if len(buf) < stop + 2:
            raise _Incomplete
        return bytes(buf[end + 2 : stop]), stop + 2
    if kind == 58:  # ':' integer
        return int(buf[pos + 1 : end]), end + 2
    if kind == 42:  # '*' array
        count = int(buf[pos + 1 : end])
        if count < 0:
            return None, end + 2
        items = []
        at = end + 2
        for _ in range(count):
            item, at = parse_reply(buf, at)
            items.append(item)
        return items, at
    if kind == 43:  # '+' simple string
        return bytes(buf[pos + 1 : end]), end + 2
    if kind == 45:  # '-' error
        message = bytes(buf[pos + 1 : end]).decode(errors="replace")
        return _ERRORS.get(message.split(" ", 1)[0], ResponseError)(message), end + 2
    raise RedisConnectionError(f"unexpected RESP reply type {chr(kind)!r}")


# ------------------------------------------------------------------------------- runners


class WireScripts:
    """Script calls on one dedicated, pipelined connection (``redis://``, ``rediss://`` and
    Sentinel clients)."""

    def __init__(self, client: Any, timeout_s: float) -> None:
        self._pool = client.connection_pool
        self._timeout_s = timeout_s
        self.server_id: str | None = None
        """``run_id`` of the server of the current (or last) connection."""
        self._conn: Any = None
        self._writer: Any = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: deque[asyncio.Future[Any]] = deque()
        self._connecting = asyncio.Lock()

    async def run(self, calls: Sequence[ScriptCall], expect: str | None) -> list[Any]:
        commands = [encode_evalsha(s.sha, k, a) for s, k, a in calls]
        replies = await self._roundtrip(commands, expect)
        for _ in range(_RELOADS):
            refused = _refused(replies)
            if not refused:
                break
            # NOSCRIPT means that call did not run; the others did, and must not run twice
            # (the lease's epoch counter and the generation bumps are not idempotent). Load the
            # missing scripts and send the refused calls again, in one round trip.
            loads = [
                encode_command("SCRIPT", "LOAD", s.source) for s in _scripts_of(calls, refused)
            ]
            again = await self._roundtrip(loads + [commands[i] for i in refused], expect)
            _raise_first_error(again[: len(loads)])
            for i, reply in zip(refused, again[len(loads) :], strict=True):
                replies[i] = reply
        _raise_first_error(replies)
        return replies

    async def commands(self, commands: Sequence[Sequence[Any]], expect: str | None) -> list[Any]:
        replies = await self._roundtrip([encode_command(*c) for c in commands], expect)
        _raise_first_error(replies)
        return replies

    async def identify(self) -> str:
        await self._connected(asyncio.get_running_loop().time() + self._timeout_s)
        assert self.server_id is not None
        return self.server_id

    async def _roundtrip(self, commands: list[bytes], expect: str | None) -> list[Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        writer = await self._connected(deadline)
        if self.server_id != expect:
            raise ServerChanged(self.server_id or "unknown")
        futures = [loop.create_future() for _ in commands]
        self._pending.extend(futures)
        writer.write(b"".join(commands))
        expiry = loop.call_at(deadline, self._expire, futures)
        try:
            for future in futures:
                await future
            replies = [f.result() for f in futures]
        finally:
            expiry.cancel()
            for future in futures:
                if not future.done():
                    future.cancel()  # its reply is read and dropped
                elif not future.cancelled():
                    future.exception()  # retrieved: asyncio must not log it as lost
        if any(isinstance(r, ReadOnlyError) for r in replies):
            # The server was demoted to a replica (a Sentinel failover): a new connection asks
            # the sentinels for the current master.
            self._drop(RedisConnectionError("Redis answered READONLY: the master moved"))
        return replies

    def _expire(self, futures: list[asyncio.Future[Any]]) -> None:
        # Replies still owed would arrive late and out of reach of their caller: drop the
        # connection (the next call opens a new one) rather than keep a backlog behind a
        # server that hangs.
        if all(f.done() for f in futures):
            return
        for f in futures:
            if not f.done():
                f.set_exception(TimeoutError("Redis did not answer in time"))
        self._drop(TimeoutError("Redis did not answer in time"))

    async def _connected(self, deadline: float) -> Any:
        if self._writer is not None:
            return self._writer
        loop = asyncio.get_running_loop()
        async with self._connecting:
            if self._writer is None:
                # RESP2 whatever the client negotiates: the parser below speaks it, and a RESP2
                # connection gets no unsolicited push messages to tell apart from replies.
                kwargs = {**self._pool.connection_kwargs, "protocol": 2}
                if "maint_notifications_config" in kwargs:  # RESP3-only (redis-py >= 7)
                    kwargs.pop("maint_notifications_pool_handler", None)
                    kwargs["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
                conn = self._pool.connection_class(**kwargs)
                try:
                    async with asyncio.timeout_at(deadline):
                        await conn.connect()
                except BaseException:
                    with contextlib.suppress(Exception):
                        await conn.disconnect(nowait=True)  # no half-open socket left behind
                    raise
                reader, writer = conn._reader, conn._writer
                if reader is None or writer is None:
                    raise RedisConnectionError("redis-py connection has no stream")
                self._conn = conn
                self._reader_task = loop.create_task(self._read_replies(reader))
                try:
                    server_id = await self._identify(writer, deadline)
                except BaseException as exc:
                    self._drop(exc)
                    writer.close()
                    raise
                # Published only now: no call may go out before the server is known.
                self.server_id, self._writer = server_id, writer
            return self._writer

    async def _identify(self, writer: Any, deadline: float) -> str:
        """The server's ``run_id``: it changes when Redis restarts and when a failover puts
        another server in its place, the two events that can lose acknowledged writes.

        Every known script is loaded in the same round trip: a restarted or promoted server has
        none, and a batch whose calls were refused only in part would run the refused ones
        after the calls that followed them.
        """
        loop = asyncio.get_running_loop()
        scripts = list(_KNOWN_SCRIPTS.values())
        futures: list[asyncio.Future[Any]] = [loop.create_future() for _ in range(len(scripts) + 1)]
        self._pending.extend(futures)
        writer.write(
            encode_command("INFO", "server")
            + b"".join(encode_command("SCRIPT", "LOAD", s.source) for s in scripts)
        )
        async with asyncio.timeout_at(deadline):
            # A script the server refuses to load (an ACL without SCRIPT, bad Lua) fails where
            # it is called, with the server's own message, not here.
            info, *_ = [await f for f in futures]
        if isinstance(info, bytes):
            for line in info.splitlines():
                if line.startswith(b"run_id:"):
                    return line[7:].strip().decode()
        raise RedisConnectionError(f"INFO server gave no run_id: {info!r:.200}")

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        buf = bytearray()
        try:
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    raise RedisConnectionError("Redis closed the connection")
                buf += data
                pos = 0
                while self._pending:
                    try:
                        value, pos_after = parse_reply(buf, pos)
                    except _Incomplete:
                        break
                    pos = pos_after
                    future = self._pending.popleft()
                    if not future.done():
                        future.set_result(value)
                del buf[:pos]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._drop(exc)

    def _drop(self, reason: BaseException) -> None:
        """Forget the connection and fail every call still waiting on it."""
        writer, self._writer, self._conn = self._writer, None, None
        task, self._reader_task = self._reader_task, None
        pending, self._pending = self._pending, deque()
        error = RedisConnectionError(f"Redis connection lost: {reason!r}")
        for future in pending:
            if not future.done():
                future.set_exception(error)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()

    async def close(self) -> None:
        task = self._reader_task
        self._drop(RedisConnectionError("closed"))
        await stop_tasks([task], what="closing the Redis connection", log=_log)


class PipelineScripts:
    """Script calls through redis-py pipelines (Redis Cluster: redis-py routes each call to
    the node that owns its key's slot).

    The nodes' identities are not tracked: a Cluster failover that loses acknowledged writes is
    not detected (see the README's Redis section for the server settings that prevent it).
    """

    server_id = "cluster"

    def __init__(self, client: Any, timeout_s: float) -> None:
        self._client = client
        self._timeout_s = timeout_s

    async def run(self, calls: Sequence[ScriptCall], expect: str | None) -> list[Any]:
        if expect != self.server_id:
            raise ServerChanged(self.server_id)
        async with asyncio.timeout(self._timeout_s):
            return await self._run(calls)

    async def _run(self, calls: Sequence[ScriptCall]) -> list[Any]:
        # redis-py's pipelines ask SCRIPT EXISTS before running scripts (a second round trip):
        # run by hash instead, and reload only when the server lost them.
        replies = await self._send(calls)
        for _ in range(_RELOADS):
            refused = _refused(replies)
            if not refused:
                break
            # As on the wire: only the refused calls run again (the others ran).
            for script in _scripts_of(calls, refused):
                await self._client.script_load(script.source)
            again = await self._send([calls[i] for i in refused])
            for i, reply in zip(refused, again, strict=True):
                replies[i] = reply
        _raise_first_error(replies)
        return replies

    async def _send(self, calls: Sequence[ScriptCall]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for script, keys, args in calls:
            # execute_command: cluster pipelines refuse pipe.evalsha() outright
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))

    async def identify(self) -> str:
        return self.server_id

    async def commands(self, commands: Sequence[Sequence[Any]], expect: str | None) -> list[Any]:
        if expect != self.server_id:
            raise ServerChanged(self.server_id)
        async with asyncio.timeout(self._timeout_s):
            return await self._commands(commands)

    async def _commands(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        replies = list(await pipe.execute(raise_on_error=False))
        _raise_first_error(replies)
        return replies

    async def close(self) -> None:
        return None


def _refused(replies: Sequence[Any]) -> list[int]:
    """Positions of the calls the server refused with NOSCRIPT (they did not run)."""
    return [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]


def _scripts_of(calls: Sequence[ScriptCall], positions: Sequence[int]) -> list[LuaScript]:
    """The distinct scripts of the calls at ``positions``, in order of first use."""
    return list({calls[i][0].sha: calls[i][0] for i in positions}.values())


def _raise_first_error(replies: Sequence[Any]) -> None:
    for reply in replies:
        if isinstance(reply, Exception):
            if isinstance(reply, RedisError):
                raise reply
            raise RedisError(repr(reply)) from reply


def script_runner(client: Any, timeout_s: float) -> ScriptRunner:
    """The fastest runner the client allows: the wire for a single server, else pipelines."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None and hasattr(pool, "connection_class"):
        return WireScripts(client, timeout_s)
    return PipelineScripts(client, timeout_s)
