"""Validates the ``configurable`` part of a ``RunnableConfig`` into a typed locator."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import RunnableConfig

from langgraph_resilient.checkpoint.records import ListQuery
from langgraph_resilient.errors import ConfigurationError, InvalidConfigError

_MAX_ID_LEN = 1024


def _as_id(value: Any, key: str, *, required: bool) -> str | None:
    if value is None:
        if required:
            raise InvalidConfigError(
                f"config['configurable'][{key!r}] is missing: pass "
                f'{{"configurable": {{"{key}": "..."}}}} to the graph call'
            )
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | uuid.UUID):
        raise InvalidConfigError(
            f"config['configurable'][{key!r}] must be a string (or int/UUID), "
            f"got {type(value).__name__}"
        )
    text = str(value)
    if required and not text:
        raise InvalidConfigError(f"config['configurable'][{key!r}] must not be empty")
    if len(text) > _MAX_ID_LEN or "\x00" in text:
        raise InvalidConfigError(
            f"config['configurable'][{key!r}] must be at most {_MAX_ID_LEN} characters "
            "with no NUL byte"
        )
    return text or None


def configurable(config: RunnableConfig | None) -> dict[str, Any]:
    """The ``configurable`` mapping of ``config``, or a clear error when it is not one."""
    if config is None or not isinstance(config, dict):
        raise InvalidConfigError(
            'expected a RunnableConfig such as {"configurable": {"thread_id": "..."}}, '
            f"got {type(config).__name__}"
        )
    conf = config.get("configurable")
    if not isinstance(conf, dict):
        raise InvalidConfigError(
            'config has no "configurable" mapping: pass {"configurable": {"thread_id": "..."}}'
        )
    return conf


def thread_id_of(value: Any) -> str:
    """Validate a bare thread id argument (``delete_thread``, ``lock_thread``...)."""
    tid = _as_id(value, "thread_id", required=True)
    assert tid is not None
    return tid


@dataclass(frozen=True, slots=True)
class Locator:
    """Where a checkpoint lives: thread, namespace and (optionally) checkpoint id."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str | None

    @classmethod
    def of(cls, config: RunnableConfig | None, *, need_checkpoint_id: bool = False) -> Locator:
        """Parse ``config``, raising :class:`InvalidConfigError` with a fix when it is wrong."""
        conf = configurable(config)
        tid = _as_id(conf.get("thread_id"), "thread_id", required=True)
        ns = conf.get("checkpoint_ns") or ""
        if not isinstance(ns, str):
            raise InvalidConfigError("config['configurable']['checkpoint_ns'] must be a string")
        cid = _as_id(conf.get("checkpoint_id"), "checkpoint_id", required=need_checkpoint_id)
        assert tid is not None
        return cls(tid, ns, cid)

    def config(self, checkpoint_id: str | None = None) -> RunnableConfig:
        """The ``RunnableConfig`` LangGraph expects back for this location."""
        return {
            "configurable": {
                "thread_id": self.thread_id,
                "checkpoint_ns": self.checkpoint_ns,
                "checkpoint_id": checkpoint_id or self.checkpoint_id,
            }
        }


def list_query(
    config: RunnableConfig | None,
    filter: dict[str, Any] | None,
    before: RunnableConfig | None,
    limit: int | None,
) -> ListQuery | None:
    """What ``list`` asks the store for (``None``: nothing can match), or a clear error for
    a bad ``limit``/``filter``/config."""
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


def matches(metadata: Mapping[str, Any], filter: Mapping[str, Any]) -> bool:
    """Exact metadata matching (stores may pre-filter loosely)."""
    return all(metadata.get(k) == v for k, v in filter.items())
