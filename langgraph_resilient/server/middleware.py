"""ASGI middleware of the server: request ids, access logs and metrics; API keys; body limit.

Plain ASGI (not Starlette's BaseHTTPMiddleware) so that streamed responses pass through
untouched and each request costs a few microseconds here.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from langgraph_resilient.server import metrics, serde

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("langgraph_resilient.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
OPEN_PATHS = frozenset({"/health", "/ready", "/ok", "/metrics"})
"""Paths answered without an API key: probes and the Prometheus scrape."""


def json_access_logging() -> None:
    """Send access log records to stderr as one JSON object per line (once per process)."""
    if access_log.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: list[Any]) -> None:
    payload = serde.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class RequestContext:
    """Gives every request an id (the client's ``x-request-id`` if sane, else a new one),
    returns it as the ``x-request-id`` header, counts and times the request by route template,
    and writes one JSON access log line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _REQUEST_ID.match(candidate):
                    request_id = candidate
                break
        request_id = request_id or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            metrics.REQUESTS.labels(method, endpoint, str(status)).inc()
            metrics.REQUEST_SECONDS.labels(endpoint).observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                client = scope.get("client")
                access_log.info(
                    json.dumps(
                        {
                            "ts": time.time(),
                            "request_id": request_id,
                            "method": method,
                            "path": scope["path"],
                            "endpoint": endpoint,
                            "status": status,
                            "duration_ms": round(elapsed * 1000, 3),
                            "client": f"{client[0]}:{client[1]}" if client else None,
                        }
                    )
                )


class ApiKeyAuth:
    """Requires a valid ``x-api-key`` (compared in constant time) except on the open paths."""

    def __init__(self, app: ASGIApp, keys: tuple[str, ...]) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]

    def _valid(self, given: bytes) -> bool:
        ok = False
        for key in self.keys:  # every key is compared: the time does not depend on which
            ok |= hmac.compare_digest(given, key)
        return ok

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                given = value
                break
        if not self._valid(given):
            await _send_json(
                send,
                401,
                {"detail": "missing or invalid API key: send it in the x-api-key header"},
                [(b"www-authenticate", b"ApiKey")],
            )
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """Answers 413 when a request body is larger than ``limit`` bytes (declared or sent)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.limit:
                    await self._refuse(send)
                    return
                break
        received = 0
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        async def receiving() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, receiving, sending)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        await _send_json(send, 413, {"detail": f"request body larger than {self.limit} bytes"}, [])


class _TooLarge(BaseException):  # not Exception: body parsers must not swallow it
    pass
