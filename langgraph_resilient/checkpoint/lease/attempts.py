"""What one attempt at taking a lease comes to, and the small helpers of the lease's calls."""

from __future__ import annotations

import os
import secrets

from langgraph_resilient.errors import StaleLeaseError


def new_token() -> str:
    """A lease token: ``<pid>-<random>``."""
    return f"{os.getpid()}-{secrets.token_hex(8)}"


class RedisDown(Exception):
    """A Redis call failed in a way that means "use the durable store" (``__cause__``)."""


class Held:
    """An attempt found the lease held (``pttl_ms``: its remaining time, if known)."""

    def __init__(self, pttl_ms: int | None = None, where: str = "another worker") -> None:
        self.pttl_ms = pttl_ms
        self.where = where


RETRY = Held(0, "a concurrent acquisition")


def is_stale(exc: BaseException | None) -> bool:
    """Whether ``exc`` is, or was caused by, a ``StaleLeaseError``."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, StaleLeaseError):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False
