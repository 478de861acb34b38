"""Serialization through the saver's ``serde``, with typed errors and a payload limit.

The serde is read from the saver on every call (never captured) so that a shallow copy made by
``with_allowlist()`` serializes with its own allowlist.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer

from langgraph_resilient.checkpoint.compression import decompress
from langgraph_resilient.checkpoint.records import Typed
from langgraph_resilient.errors import PayloadTooLargeError, SerializationError


def dump(serde: SerializerProtocol, value: Any, what: str) -> Typed:
    """Serialize ``value``; a refusal becomes :class:`SerializationError` naming ``what``."""
    try:
        return serde.dumps_typed(value)
    except Exception as exc:
        raise SerializationError(
            f"cannot serialize {what} ({type(value).__name__}): {exc}. "
            "Make the value serializable by the saver's serde or extend its allowlist "
            "with saver.with_allowlist(...); nothing was written"
        ) from exc


def load(serde: SerializerProtocol, typed: Typed) -> Any:
    """Deserialize a stored ``(type, bytes)`` pair (compressed or not)."""
    return serde.loads_typed(decompress(typed))


def check_size(total: int, limit: int, what: str) -> None:
    """Refuse a payload larger than the configured limit, before anything is written."""
    if total > limit:
        raise PayloadTooLargeError(
            f"{what} is {total} bytes, over max_payload_bytes={limit}; nothing was written. "
            "Keep large data out of graph state (store a reference) or raise max_payload_bytes"
        )


def encrypts(serde: SerializerProtocol) -> bool:
    """True when ``serde`` encrypts, so nothing may be stored in plaintext."""
    return isinstance(serde, EncryptedSerializer)


def json_text(value: Any) -> str | None:
    """``value`` as JSON a database keeps, or ``None`` when it has no such form (non-JSON
    values, NUL characters, lone surrogates)."""
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        return None
    return None if "\\u0000" in text else text


def metadata_json(metadata: dict[str, Any]) -> str | None:
    """Plaintext JSON of ``metadata`` for server-side filtering, or ``None`` when it has none:
    such rows are filtered client-side only."""
    return json_text(metadata)


def run_key(run_id: Any) -> str | None:
    """An opaque, stable key for a run id (``delete_for_runs`` matches on it).

    A digest rather than the id itself so that an encrypting serde leaves no readable metadata.
    """
    if run_id is None:
        return None
    return hashlib.blake2b(str(run_id).encode(), digest_size=16).hexdigest()
