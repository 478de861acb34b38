"""Stopping background tasks without ever hanging, and without losing a cancellation.

Python 3.11's ``asyncio.wait_for`` returns the inner result when its caller is cancelled just
as the inner work finishes: the cancellation is lost, and a background loop built on it keeps
looping though it was told to stop (its ``cancelling()`` count stays above zero). Code here
therefore bounds waits with ``asyncio.timeout`` (which runs the work in the caller's task and
cannot lose a cancellation), checks :func:`cancelling` at the top of every background loop, and
stops tasks with :func:`stop_tasks`, which gives up on a task that will not stop instead of
waiting for it forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

STOP_TIMEOUT_S = 5.0
"""How long closing a saver waits for one of its background tasks before abandoning it."""

_RECANCEL_EVERY_S = 0.25


def cancelling() -> bool:
    """True when the current task has been asked to stop (a lost cancellation included)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def stop_tasks(
    tasks: Iterable[asyncio.Task[object] | asyncio.Task[None] | None],
    *,
    what: str,
    log: logging.Logger,
    timeout_s: float = STOP_TIMEOUT_S,
) -> None:
    """Cancel ``tasks`` and wait for them to end, for at most ``timeout_s`` in all.

    A task still running is cancelled again every quarter second (in case it lost the first
    cancellation); one that has not ended by the deadline is logged as an error and abandoned.
    A task that failed has its exception logged. The caller's own cancellation is never
    swallowed: it propagates at once.
    """
    pending = {t for t in tasks if t is not None}
    if not pending:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while pending:
        for task in pending:
            task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        done, pending = await asyncio.wait(pending, timeout=min(_RECANCEL_EVERY_S, remaining))
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("%s: task %s failed", what, task.get_name(), exc_info=task.exception())
    for task in pending:
        log.error(
            "%s: task %s did not stop within %.1f s of being cancelled; abandoned (stack: %s)",
            what,
            task.get_name(),
            timeout_s,
            "; ".join(str(frame) for frame in task.get_stack(limit=3)) or "unknown",
        )
