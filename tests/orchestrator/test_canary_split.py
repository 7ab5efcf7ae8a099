"""The orchestrator's side of a canary: its alias cache reads the canary (by notification and by re-read, real
Redis) and `pick` sends the canary's share of requests to the candidate, one user always to one version."""

from __future__ import annotations

import asyncio

from services.orchestrator.adapters import AdapterAliases
from shared import redis_keys
from shared.adapters import Canary, set_active_adapter, set_canary


async def until(check, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no notification arrived")


async def test_the_cache_follows_a_canary_and_splits_requests(private_redis):
    redis = redis_keys.connect(private_redis.url)
    notified, polled = AdapterAliases(redis_keys.connect(private_redis.url)), AdapterAliases(redis, refresh_s=3600)
    watcher = asyncio.create_task(notified.run())
    try:
        await set_active_adapter(redis, "split", "split-v1")
        for _ in range(500):  # until it subscribed (5 s at most)
            if (await redis.pubsub_numsub(redis_keys.ADAPTER_CHANGED_CHANNEL))[0][1]:
                break
            await asyncio.sleep(0.01)
        await set_canary(redis, "split", Canary(adapter="split-v2", weight=0.25, active="split-v1"))
        await until(lambda: notified.canary("split") is not None)
        await polled.refresh()  # the periodic re-read finds it too (a missed notification)
        for aliases in (notified, polled):
            assert aliases.get("split") == "split-v1" and aliases.canary("split").adapter == "split-v2"
            picks = [aliases.pick("split", f"tr-{i}") for i in range(4000)]
            assert set(picks) == {"split-v1", "split-v2"} and 0.22 < picks.count("split-v2") / 4000 < 0.28
            assert len({aliases.pick("split", "user-7") for _ in range(20)}) == 1
        await set_active_adapter(redis, "split", "split-v2")  # a promotion ends the canary everywhere
        await until(lambda: notified.canary("split") is None)
        await polled.refresh()
        for aliases in (notified, polled):
            assert aliases.canary("split") is None and aliases.pick("split", "tr-1") == "split-v2"
    finally:
        watcher.cancel()
        await set_active_adapter(redis, "split", None)
        await redis.aclose()
