"""The round trigger (issue 20, defect 12): one domain failing does not starve the others, and a DPO round runs in
its own task, so canary verdicts and rollbacks of every domain go on while it trains."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from unittest.mock import AsyncMock

from services.trainer.app import Trainer
from tests.support.settings import trainer_settings


async def test_a_failing_domain_and_a_long_round_leave_the_others_checked(fresh_redis):
    trainer = Trainer(trainer_settings("http://weak", "http://strong", fresh_redis.url, min_pairs_per_round=1))
    checked: list[str] = []
    release = asyncio.Event()

    async def check(domain):
        if domain == "broken":
            raise RuntimeError("this domain's state is corrupt")
        checked.append(domain)

    async def run(domain, force=False):
        await release.wait()  # a DPO round that takes a while
        return SimpleNamespace(status="promoted", detail="")

    trainer.canaries.check = check  # type: ignore[method-assign]
    trainer.swapper.check_live_regression = AsyncMock(return_value=None)  # type: ignore[method-assign]
    trainer.store.manual_rounds = AsyncMock(return_value=False)  # type: ignore[method-assign]
    trainer.store.pending_pairs = AsyncMock(side_effect=lambda d: ["pair"] if d == "training" else [])  # type: ignore[method-assign]
    trainer.rounds.run = AsyncMock(side_effect=run)  # type: ignore[method-assign]
    try:
        await asyncio.wait_for(trainer.trigger("training"), 2)  # starts the round and returns at once
        await asyncio.wait_for(trainer.trigger("broken"), 2)  # logged, not raised
        await asyncio.wait_for(trainer.trigger("other"), 2)  # checked while the round still trains
        await asyncio.wait_for(trainer.trigger("training"), 2)  # its canary is checked; no second round
        assert checked == ["training", "other", "training"]
        assert trainer.rounds.run.await_count == 1
        release.set()
        await asyncio.wait_for(trainer._rounds["training"], 2)
    finally:
        release.set()
        await trainer.stop_rounds()
        await trainer.aclose()
