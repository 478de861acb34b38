"""JSON for the HTTP API: graph state, stream chunks and records, as LangGraph Server sends them.

State values hold whatever a graph puts in them: LangChain messages and other pydantic models,
dataclasses (``Interrupt``), ``Send``/``Command``, sets, tuples, bytes. orjson encodes the common
types natively; ``_default`` turns the rest into plain JSON the SDK can read.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Mapping
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _default(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    if callable(dump):  # pydantic v2 models, LangChain messages
        return dump()
    legacy = getattr(obj, "dict", None)
    if callable(legacy) and hasattr(obj, "__fields__"):  # pydantic v1 models
        return legacy()
    if isinstance(obj, set | frozenset):
        return list(obj)
    if isinstance(obj, bytes | bytearray):
        return base64.b64encode(bytes(obj)).decode()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, BaseException):
        return {"error": type(obj).__name__, "message": str(obj)}
    if isinstance(obj, Mapping):
        return dict(obj)
    to_json = getattr(obj, "to_json", None)
    if callable(to_json):  # LangChain Serializable objects that are not pydantic
        return to_json()
    return repr(obj)


def dumps(value: Any) -> bytes:
    """``value`` as JSON bytes (never raises for an unknown type: it falls back to ``repr``)."""
    return orjson.dumps(value, default=_default, option=_OPTIONS)


def to_jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (dicts, lists, strings, numbers)."""
    return orjson.loads(dumps(value))


loads = orjson.loads
