"""Metrics: saver operations, cache hits, Redis availability and node middleware events."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from prometheus_client import REGISTRY, CollectorRegistry

from langgraph_resilient import EventBus, EventKind, ResilientSaver
from langgraph_resilient.observability.metrics import install_node_metrics
from tests.conftest import SaverFactory


def _value(name: str, labels: dict[str, str], registry: CollectorRegistry = REGISTRY) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_saver_operations_and_cache_reads_are_counted(make_saver: SaverFactory) -> None:
    saver: ResilientSaver = await make_saver()
    tier = saver.store.tier_name
    config = {"configurable": {"thread_id": "m", "checkpoint_ns": ""}}
    ops_before = _value(
        "langgraph_checkpoint_op_seconds_count", {"op": "get_tuple", "tier": tier, "outcome": "ok"}
    )
    await saver.aget_tuple(config)  # type: ignore[arg-type]
    ops_after = _value(
        "langgraph_checkpoint_op_seconds_count", {"op": "get_tuple", "tier": tier, "outcome": "ok"}
    )
    assert ops_after == ops_before + 1


def test_node_events_become_metrics() -> None:
    registry = CollectorRegistry()
    bus = EventBus()
    uninstall = install_node_metrics(bus, registry)
    bus.publish(EventKind.CALL, "llm", outcome="success", duration_s=0.2)
    bus.publish(EventKind.RETRY, "llm", attempt=1)
    bus.publish(EventKind.BREAKER_STATE, "llm", old="closed", new="open")
    uninstall()
    bus.publish(EventKind.RETRY, "llm", attempt=2)
    assert (
        _value("langgraph_node_calls_total", {"node": "llm", "outcome": "success"}, registry) == 1
    )
    assert _value("langgraph_node_retries_total", {"node": "llm"}, registry) == 1
    assert _value("langgraph_breaker_state", {"breaker": "llm"}, registry) == 2


async def test_tier_hits_are_counted(make_saver: SaverFactory, backend: str) -> None:
    saver: ResilientSaver = await make_saver()
    config = {"configurable": {"thread_id": "hits", "checkpoint_ns": ""}}
    cp = dict(empty_checkpoint())
    await saver.aput(config, cp, {}, {})  # type: ignore[arg-type]
    hits = _value("langgraph_checkpoint_cache_reads_total", {"result": "hit"})
    await saver.aget_tuple(config)  # type: ignore[arg-type]
    expected = hits + 1 if backend == "tiered" else hits
    assert _value("langgraph_checkpoint_cache_reads_total", {"result": "hit"}) == expected


SPANS_SCRIPT = """
import asyncio, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from langgraph_resilient import ResilientSaver
from langgraph_resilient.observability import metrics

async def op(path):
    async with ResilientSaver.from_urls(sqlite_path=path) as saver:
        await saver.aget_tuple({"configurable": {"thread_id": "t", "checkpoint_ns": ""}})

exporter = InMemorySpanExporter()
asyncio.run(op(sys.argv[1] + "/before.sqlite"))  # no SDK yet: no span, nothing fails
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
asyncio.run(op(sys.argv[1] + "/after.sqlite"))
print(sorted({(s.name, s.attributes["tier"]) for s in exporter.get_finished_spans()}))
"""


def test_spans_are_recorded_once_an_sdk_is_configured(tmp_path: Path) -> None:
    # A fresh process: a tracer provider can be set only once per process.
    out = subprocess.run(
        [sys.executable, "-c", SPANS_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "('checkpoint.get_tuple', 'sqlite')" in out.stdout, out.stdout + out.stderr


async def test_lease_metrics_count_acquisitions_contention_and_timeouts(tmp_path: Path) -> None:
    from langgraph_resilient import LockTimeoutError

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = (
        sample("langgraph_lease_acquisitions_total", contended="false"),
        sample("langgraph_lease_timeouts_total"),
        sample("langgraph_lease_wait_seconds_count"),
    )
    path = str(tmp_path / "s.db")
    async with (
        ResilientSaver.from_urls(sqlite_path=path) as one,
        ResilientSaver.from_urls(sqlite_path=path) as two,
        one.lock_thread("t", ttl_s=5.0),
    ):
        with pytest.raises(LockTimeoutError):
            async with two.lock_thread("t", wait_s=0.05):
                pass
    assert sample("langgraph_lease_acquisitions_total", contended="false") == before[0] + 1
    assert sample("langgraph_lease_timeouts_total") == before[1] + 1
    assert sample("langgraph_lease_wait_seconds_count") == before[2] + 2
