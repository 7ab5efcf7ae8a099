"""A canary closed on live feedback, with real parts: the tiny vLLM weak and strong servers, real Redis, the
orchestrator and the trainer service over HTTP, product code calling through `cowest_client`.

- POST /adapters/<domain>/canary puts v2 on half of the requests beside v1: both versions answer, in a share the
  weight predicts, one user always gets one version, no request fails;
- users score v2's answers higher: the trainer's own loops (collector -> live scores per version -> canary check)
  promote v2, and every orchestrator request goes to v2;
- a canary of v3 that users score lower is rolled back by the trainer: the alias stays on v2 and v3 leaves vLLM."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from cowest_client import AsyncCowestClient
from services.orchestrator.app import create_app
from services.trainer.app import create_app as create_trainer
from services.trainer.registry import AdapterRegistry
from services.weak_server.admin_client import VllmAdminClient
from shared import redis_keys
from tests.support.memory import register_version
from tests.support.servers import make_lora_adapter, serve_app
from tests.support.settings import ADMIN, orch_settings, trainer_settings

pytestmark = pytest.mark.slow
DOMAIN = "canary"


async def traffic(client: AsyncCowestClient, n: int, prefix: str) -> list[tuple[str, str | None]]:
    """n collaborations, 8 at a time: (trace id, the adapter version that wrote the draft)."""
    gate = asyncio.Semaphore(8)

    async def one(i: int) -> tuple[str, str | None]:
        async with gate:
            r = await client.collaborate(f"{prefix} question {i}?", domain=DOMAIN)
            assert r.degraded is None, r
            return r.id, r.weak.adapter

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def score(client: AsyncCowestClient, served: list[tuple[str, str | None]], scores: dict[str, float]) -> None:
    for trace_id, adapter in served:
        await client.feedback(trace_id, score=scores[adapter or ""])


async def until(check, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.5)
    raise AssertionError(f"not within {seconds} s: {what}")


async def routed(url: str, active: str | None, canary: str | None) -> None:
    """Wait until the orchestrator routes DOMAIN this way (its cache hears of changes by pub/sub)."""

    async def now() -> bool:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            info = (await http.get(f"/v1/domains/{DOMAIN}")).json()
        return info["active_adapter"] == active and (info["canary"] or {}).get("adapter") == canary

    await until(now, 30, f"the orchestrator routing {DOMAIN} to {active} with canary {canary}")


async def test_a_canary_is_promoted_or_rolled_back_on_live_feedback(
    tiny_models, tiny_weak_server, tiny_strong_server, private_redis, tmp_path
):
    weak_dir = tiny_models["tiny-weak"]
    settings = trainer_settings(
        tiny_weak_server,
        tiny_strong_server,
        private_redis.url,
        base_model_dir=weak_dir,
        adapters_dir=tmp_path / "adapters",
        domains=[DOMAIN],
        drain_s=0.5,
        rollback_depth=0,
        canary_weight=0.5,
        canary_min_feedback=12,
        canary_margin=0.05,
    )
    registry = AdapterRegistry(settings.adapters_dir)
    v1, v2, v3 = (
        register_version(
            registry,
            make_lora_adapter(weak_dir, tmp_path / f"trained-{seed}", seed=seed),
            domain=DOMAIN,
            base_model_path=weak_dir,
            round=seed,
        )
        for seed in (21, 22, 23)
    )
    orch = orch_settings(tiny_weak_server, tiny_strong_server, private_redis.url, tmp_path / "spool.jsonl")
    redis = redis_keys.connect(private_redis.url)
    try:
        with serve_app(create_trainer(settings)) as trainer, serve_app(create_app(orch)) as url:
            async with httpx.AsyncClient(base_url=trainer, headers=ADMIN, timeout=120) as admin:
                async with AsyncCowestClient(url, timeout=120) as client:
                    # v1 serves the domain; v2 goes on half of the traffic beside it.
                    r = await admin.post(f"/adapters/{DOMAIN}/canary", json={"adapter": v1, "weight": 0.5})
                    assert r.status_code == 200, r.text  # a canary against the base model
                    assert (await admin.post(f"/adapters/{DOMAIN}/canary/promote")).status_code == 200
                    assert await redis.get(redis_keys.active_adapter(DOMAIN)) == v1
                    r = await admin.post(f"/adapters/{DOMAIN}/canary", json={"adapter": v2})
                    assert r.status_code == 200 and r.json()["active"] == v1 and r.json()["weight"] == 0.5, r.text
                    await routed(url, v1, v2)
                    served = await traffic(client, 40, "first")
                    versions = [a for _, a in served]
                    assert set(versions) == {v1, v2}
                    assert 10 <= versions.count(v2) <= 30  # 50% of 40: +-3.2 sd
                    sticky = [
                        (await client.collaborate("Sticky?", domain=DOMAIN, user="user-42")).weak.adapter
                        for _ in range(4)
                    ]
                    assert len(set(sticky)) == 1, sticky

                    # Users like v2's answers better: the trainer promotes it by itself.
                    await score(client, served, {v1: 0.3, v2: 0.9})

                    async def promoted():
                        return await redis.get(redis_keys.active_adapter(DOMAIN)) == v2

                    await until(promoted, 60, "the trainer promoted v2")
                    assert (await admin.get(f"/adapters/{DOMAIN}/canary")).status_code == 404
                    await routed(url, v2, None)
                    assert {a for _, a in await traffic(client, 8, "after")} == {v2}

                    # v3 on a canary that users score lower: rolled back; v2 stays, v3 leaves vLLM.
                    r = await admin.post(f"/adapters/{DOMAIN}/canary", json={"adapter": v3, "weight": 0.5})
                    assert r.status_code == 200, r.text
                    await routed(url, v2, v3)
                    served = await traffic(client, 40, "second")
                    assert {a for _, a in served} == {v2, v3}
                    await score(client, served, {v2: 0.8, v3: 0.2})

                    async def rolled_back():
                        return (await admin.get(f"/adapters/{DOMAIN}/canary")).status_code == 404

                    await until(rolled_back, 60, "the trainer rolled the canary of v3 back")
                    assert await redis.get(redis_keys.active_adapter(DOMAIN)) == v2

                    # The verdict lands in the manifest just after the canary key goes: wait for it, not a sleep.
                    async def verdicts() -> dict:
                        manifest = (await admin.get("/adapters")).json()[DOMAIN]
                        return {m["name"]: m["metrics"] for m in manifest}

                    async def v3_judged() -> bool:
                        return "canary_promoted" in (await verdicts()).get(v3, {})

                    await until(v3_judged, 30, "v3's verdict in the manifest")
                    metrics = await verdicts()
                    assert metrics[v3]["canary_promoted"] == 0.0 and metrics[v2]["canary_promoted"] == 1.0
                    assert metrics[v3]["canary_live_score"] == pytest.approx(0.2)

                    async def v3_unloaded():
                        async with VllmAdminClient(tiny_weak_server) as vllm:
                            return v3 not in {m.id for m in await vllm.adapters()}

                    await until(v3_unloaded, 30, "v3 unloaded after the drain")
                    await routed(url, v2, None)
                    assert {a for _, a in await traffic(client, 8, "last")} == {v2}
    finally:
        await redis.aclose()
