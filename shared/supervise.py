"""Background loops that outlive their failures: a loop that raises is logged and restarted after a backoff
(doubling to `max_s`, reset once a run lasted a minute), so one Redis or model-server error cannot silently
stop a service's collector, trigger, reconcile, watcher or replayer while its HTTP side keeps answering."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)


def stop_if_cancelled() -> None:
    """Raise CancelledError when this task has been asked to stop. Python 3.11's `asyncio.wait_for` can swallow a
    cancellation that lands as its inner call completes (returning the result, or raising TimeoutError; fixed in
    3.12): a background loop that then goes on would never stop, and hang its service's shutdown. The request
    still shows in `Task.cancelling()`, so every loop calls this before each pass and in its `except` clauses."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def supervised(
    name: str, loop: Callable[[], Awaitable[None]], base_s: float = 0.5, max_s: float = 30.0, healthy_s: float = 60.0
) -> None:
    """Run `loop()` forever (cancel to stop). Each return or exception counts as a failure of that run."""
    backoff = base_s
    while True:
        stop_if_cancelled()
        started = time.monotonic()
        try:
            await loop()
            logger.warning("%s loop returned; restarting it", name)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - whatever it was, the loop must come back
            stop_if_cancelled()
            logger.exception("%s loop failed; restarting it in %.1f s", name, backoff)
        if time.monotonic() - started >= healthy_s:
            backoff = base_s
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, max_s)
