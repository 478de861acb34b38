"""A worker process for the lease tests: ``python -m tests.checkpoint.lease.worker '<json args>'``.

Modes:

- ``stall``: take the thread's lease (short ttl) and start a turn of the takeover graph; its
  first node writes ``marker`` and then sleeps, so the test can SIGSTOP this process mid-turn.
  Reports the lease, the outcome of every put/put_writes and the graph's error as JSON.
- ``race``: run ``turns`` turns on each of ``threads`` (concurrently across threads) through
  ``with_resilience(..., exclusive_threads=True)``; reports each run's interval (from inside
  the graph) and any error.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import traceback
from pathlib import Path
from typing import Any

from langgraph_resilient import with_resilience
from langgraph_resilient.checkpoint.lease.exclusive import ExclusiveGraph
from tests.checkpoint.lease.graphs import RecordingSaver, race_graph, takeover_graph


async def stall(args: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {"error": None}
    async with RecordingSaver.from_urls(**args["saver"]) as saver:
        graph = takeover_graph().compile(checkpointer=saver)
        config = {
            "configurable": {
                "thread_id": args["thread_id"],
                "worker": "w1",
                "marker": args["marker"],
                "stall_s": args["stall_s"],
            }
        }
        async with saver.lock_thread(args["thread_id"], ttl_s=args["ttl_s"], wait_s=10) as lease:
            result.update(epoch=lease.epoch, backend=lease.backend)
            try:
                await graph.ainvoke({"log": ["input:w1"]}, config, durability="sync")
            except Exception as exc:
                result["error"] = type(exc).__name__
            await asyncio.sleep(args["ttl_s"] / 2)  # give the renewal time to notice
            result.update(lost=lease.lost, lost_reason=lease.lost_reason)
        result["calls"] = getattr(saver, "calls", [])
    return result


async def race(args: dict[str, Any]) -> dict[str, Any]:
    intervals: list[tuple[str, float, float]] = []
    errors: list[str] = []
    worker = args["worker"]
    async with RecordingSaver.from_urls(**args["saver"]) as saver:
        builder = with_resilience(
            race_graph(intervals),
            exclusive_threads=True,
            lease_ttl_s=args["ttl_s"],
            lease_wait_s=30,
        )
        graph = builder.compile(checkpointer=saver)
        assert isinstance(graph, ExclusiveGraph)
        Path(args["ready"]).write_text("ready")  # noqa: ASYNC240
        while not Path(args["go"]).exists():  # noqa: ASYNC110, ASYNC240 (start together)
            await asyncio.sleep(0.005)

        async def one_thread(thread_id: str) -> None:
            for turn in range(args["turns"]):
                config = {"configurable": {"thread_id": thread_id}}
                try:
                    await graph.ainvoke({"turns": [f"{worker}-{turn}"]}, config)
                except Exception:
                    errors.append(traceback.format_exc())
                await asyncio.sleep(random.uniform(0, 0.03))  # think time between turns

        await asyncio.gather(*(one_thread(t) for t in args["threads"]))
    return {"intervals": intervals, "errors": errors}


def main() -> None:
    args = json.loads(sys.argv[1])
    mode = {"stall": stall, "race": race}[args["mode"]]
    try:
        result = asyncio.run(mode(args))
    except Exception:
        result = {"fatal": traceback.format_exc()}
    Path(args["out"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
