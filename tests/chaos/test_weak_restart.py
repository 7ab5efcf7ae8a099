"""The weak vLLM server SIGKILLed and restarted with an adapter active: the trainer's reconcile loop loads the
active version (and the one kept for rollback) into the new process, as the alias in Redis says, without anyone
asking. Before, reconcile was only tested by calling it after a manual unload."""

from __future__ import annotations

import asyncio
import time

import pytest

from cowest.processes import ProcessTable
from services.trainer.app import Trainer
from services.weak_server.admin_client import VllmAdminClient
from shared.adapters import set_active_adapter
from tests.support.chaos import Part
from tests.support.servers import make_lora_adapter, weak_server_settings
from tests.support.settings import trainer_settings

pytestmark = pytest.mark.slow
DOMAIN = "restarty"
HELLO = [{"role": "user", "content": "Hello"}]


async def test_a_restarted_weak_server_gets_the_active_adapters_back(tiny_models, fresh_redis, tmp_path):
    weak = weak_server_settings()
    table = ProcessTable(tmp_path / "run")

    async def probe() -> bool:
        async with VllmAdminClient(weak.base_url, timeout=5) as client:
            return await client.ready()

    part = Part(
        "weak",
        lambda: table.start("weak", weak.argv(tiny_models["tiny-weak"], "tiny-weak", "float32"), weak.env()),
        probe,
        table,
    )
    settings = trainer_settings(
        weak.base_url,
        "http://127.0.0.1:9/v1",  # no strong model is needed here
        fresh_redis.url,
        base_model_dir=tiny_models["tiny-weak"],
        adapters_dir=tmp_path / "adapters",
        drain_s=0.0,
    )
    trainer = Trainer(settings)
    names = []
    for seed in (1, 2):
        trained = make_lora_adapter(tiny_models["tiny-weak"], tmp_path / f"trained-{seed}", seed=seed)
        manifest = trainer.registry.register(
            trained,
            domain=DOMAIN,
            base_model="tiny-weak",
            base_model_path=tiny_models["tiny-weak"],
            parent=names[-1] if names else None,
            round=seed,
            pairs=8,
            kind="dpo",
        )
        names.append(manifest.name)
    part.start()
    try:
        await asyncio.to_thread(part.ready)
        for name in names:
            await trainer.swapper.activate(DOMAIN, name)  # v2 active, v1 kept for rollback
        assert set(names) <= await trainer.swapper.loaded()

        part.kill()
        part.start()
        await asyncio.to_thread(part.ready)
        assert not set(names) & await trainer.swapper.loaded()  # a new process: no adapter loaded

        loop = asyncio.create_task(trainer.reconcile_loop())  # as the trainer service runs it
        try:
            deadline = time.monotonic() + 60
            while not set(names) <= await trainer.swapper.loaded():
                assert time.monotonic() < deadline, "the reconcile loop did not reload the active versions"
                await asyncio.sleep(0.5)
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
        async with VllmAdminClient(weak.base_url) as admin:  # and they serve: their log-probs differ from the base's
            base, tuned = await asyncio.gather(
                admin.greedy_logprobs("tiny-weak", HELLO), admin.greedy_logprobs(names[-1], HELLO)
            )
        assert base != tuned
    finally:
        await set_active_adapter(trainer.redis, DOMAIN, None)
        await trainer.aclose()
        table.stop("weak", timeout=20)
