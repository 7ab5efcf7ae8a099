"""A cancellation swallowed inside a background loop (as Python 3.11's asyncio.wait_for can do) must still stop
the loop: otherwise the service's shutdown waits for it forever."""

from __future__ import annotations

import asyncio
import contextlib

from shared.supervise import supervised
from shared.watch import watch


async def swallow_a_cancel() -> None:
    """What the 3.11 bug does: the task is asked to stop, the CancelledError is caught and dropped."""
    asyncio.current_task().cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(0)


class SwallowingPubSub:
    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return None

    async def subscribe(self, channel: str) -> None:
        pass

    async def get_message(self, **_):
        await swallow_a_cancel()
        return None


class FakeRedis:
    def pubsub(self):
        return SwallowingPubSub()


async def nothing(*_) -> None:
    pass


async def test_a_watcher_stops_after_a_swallowed_cancellation():
    task = asyncio.create_task(watch(FakeRedis(), "ch", nothing, nothing, 60.0, "test"))
    await asyncio.wait({task}, timeout=2.0)
    assert task.cancelled(), "the watcher went on after its cancellation"


async def test_a_supervised_loop_stops_after_a_swallowed_cancellation():
    async def loop() -> None:
        await swallow_a_cancel()
        raise RuntimeError("a failure right after it")

    task = asyncio.create_task(supervised("test", loop, base_s=0.01))
    await asyncio.wait({task}, timeout=2.0)
    assert task.cancelled(), "the supervised loop went on after its cancellation"
