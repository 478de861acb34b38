"""The official LangGraph conformance suite, all eight capabilities, on both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES

from langgraph_resilient import ResilientSaver
from tests.conftest import SaverFactory


async def test_all_capabilities_pass(make_saver: SaverFactory) -> None:
    @checkpointer_test(name="ResilientSaver")
    async def factory() -> AsyncIterator[ResilientSaver]:
        yield await make_saver()

    report = await validate(factory)
    failures = {cap: result.failures for cap, result in report.results.items() if not result.passed}
    assert not failures, failures
    assert {cap for cap, r in report.results.items() if r.passed} == {
        c.value for c in ALL_CAPABILITIES
    }
