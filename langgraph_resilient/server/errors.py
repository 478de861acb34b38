"""Errors of the HTTP API: a status that says what is wrong and a JSON body, never a trace."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from langgraph_resilient.server import serde

log = logging.getLogger("langgraph_resilient.server")


class ApiError(Exception):
    """An error answered with ``status`` and ``{"detail": ...}``."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors
        self.headers = headers


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response encoded with the API's serde (graph values included)."""
    return Response(
        serde.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def error_response(
    status: int,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {"detail": detail}
    if errors is not None:
        body["errors"] = errors
    return json_response(body, status, headers)


def _field(loc: Any) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def _plain(value: Any) -> Any:
    return serde.to_jsonable(value)


async def on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"field": _field(e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type")}
        for e in exc.errors()
    ]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
    return error_response(422, detail, _plain(errors))


async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.detail, exc.errors, exc.headers)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(
        exc.status_code, str(exc.detail), headers=dict(exc.headers) if exc.headers else None
    )


async def on_unexpected(request: Request, exc: Exception) -> Response:
    request_id = request.scope.get("state", {}).get("request_id", "")
    log.exception(
        "unhandled error in %s %s (request %s)", request.method, request.url.path, request_id
    )
    return error_response(500, f"internal error (request id {request_id}); see the server log")


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found")
