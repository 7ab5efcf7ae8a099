"""A trainer process SIGKILLed at each named point of a round (shared/failpoints.py), restarted each time. After
every crash: every version in the registry has a manifest that parses, no training job outlives its trainer,
the round lock lapses (the next round runs instead of being skipped), the active version is loaded on vLLM.
At the end the round counter adds up: a round killed after its gate counts once, and its pairs are never
trained on a second time."""

from __future__ import annotations

import asyncio
import re
import sys
import time

import httpx
import psutil
import pytest

from cowest.processes import ProcessTable, wait_until_ready
from cowest.stack import http_ok, settings_env
from services.orchestrator.app import create_app
from services.trainer.registry import AdapterRegistry
from services.weak_server.admin_client import VllmAdminClient
from shared.adapters import get_active_adapter, set_active_adapter
from shared.failpoints import FAILPOINT_ENV, FAILPOINTS
from tests.support.metrics import length_metric_env
from tests.support.servers import free_port, serve_app
from tests.support.settings import ADMIN, orch_settings
from tests.trainer.test_round import GATE_ITEMS, Parts, collect_all, round_settings, send_traffic

pytestmark = pytest.mark.slow
DOMAIN = "crashy"
LOCK_TTL_S = 6


def jobs_alive() -> list[psutil.Process]:
    return [
        p for p in psutil.process_iter(["cmdline"]) if "services.trainer.jobs" in " ".join(p.info["cmdline"] or [])
    ]


async def test_a_trainer_killed_at_each_point_of_a_round_recovers_and_counts_rounds_once(
    tiny_models, tiny_weak_server, tiny_strong_server, fresh_redis, tmp_path, length_metric
):
    length_metric(DOMAIN)
    settings = round_settings(
        DOMAIN,
        tiny_models,
        tiny_weak_server,
        tiny_strong_server,
        fresh_redis.url,
        tmp_path,
        port=free_port(),
        min_pairs_per_round=10**6,  # rounds only when this test asks (POST /train, forced)
        lock_ttl_s=LOCK_TTL_S,
        dpo_max_steps=4,
        dpo_learning_rate=1e-3,
        dpo_batch_size=4,
    )
    parts = Parts(settings)  # this process's collector makes the pairs and held-out items (length metric)
    orch = orch_settings(
        tiny_weak_server, tiny_strong_server, fresh_redis.url, tmp_path / "spool.jsonl", domains=["general", DOMAIN]
    )
    fields = ("endpoints", "admin_key", "base_model_dir", "adapters_dir", "domains", "port", "min_pairs_per_round")
    fields += ("min_pairs_forced", "lock_ttl_s", "gate_tolerance", "gate_min_items", "gate_min_variety", "drain_s")
    fields += ("k_drafts", "draft_max_tokens", "strong_max_tokens", "dpo_epochs", "dpo_max_steps")
    fields += ("dpo_learning_rate", "dpo_batch_size")
    # The trainer process scores this domain by answer length too (as this process does, for the collector):
    # a sitecustomize on its path installs the same metric override at start-up.
    env = {"COWEST_HOME": str(tmp_path / "home")} | length_metric_env(tmp_path / "hook", DOMAIN)
    env |= settings_env(settings, *fields)
    url = f"http://127.0.0.1:{settings.port}"
    table = ProcessTable(tmp_path / "run")
    registry = AdapterRegistry(settings.adapters_dir)

    def start_trainer(failpoint: str | None) -> None:
        extra = {FAILPOINT_ENV: failpoint} if failpoint else {}
        table.start("trainer", [sys.executable, "-m", "services.trainer.app"], env | extra)
        asyncio.run(wait_until_ready(table, {"trainer": lambda: http_ok(f"{url}/healthz")}, 60))

    def train() -> dict | None:
        """POST /train; None when the trainer died answering it. A round skipped because the lock of a killed
        trainer has not lapsed yet is tried again (the lock's TTL is LOCK_TTL_S)."""
        deadline = time.monotonic() + 3 * LOCK_TTL_S
        while True:
            try:
                r = httpx.post(f"{url}/train", json={"domain": DOMAIN, "force": True}, headers=ADMIN, timeout=600)
            except httpx.HTTPError:
                return None
            result = r.json()
            if "another round" not in (result.get("detail") or "") or time.monotonic() > deadline:
                return result
            time.sleep(1)

    def check_after_crash(point: str) -> None:
        record = table.get("trainer")
        deadline = time.monotonic() + 30
        while record and record.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not (record and record.alive()), f"the trainer did not reach {point}"
        deadline = time.monotonic() + 10
        while jobs_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not jobs_alive(), f"a training job outlived the trainer killed at {point}"
        for path in (settings.adapters_dir / DOMAIN).glob(f"{DOMAIN}-v*"):
            if re.fullmatch(rf"{DOMAIN}-v\d+", path.name):
                registry.get(path.name)  # raises on a missing or torn manifest

    try:
        with serve_app(create_app(orch)) as orch_url:
            sent = await asyncio.to_thread(send_traffic, orch_url, DOMAIN, GATE_ITEMS + 14)
            await collect_all(parts.named_collector("c1"), parts.store, DOMAIN, sent)
            assert len(await parts.store.pending_pairs(DOMAIN)) >= 2

            outcomes = {}
            for point in FAILPOINTS:
                await asyncio.to_thread(start_trainer, point)
                outcomes[point] = await asyncio.to_thread(train)
                await asyncio.to_thread(check_after_crash, point)
            assert all(result is None for result in outcomes.values()), outcomes  # each crashed where named

            # Killed after its flip: the alias points at the promoted version, which vLLM serves; that round
            # counts once (the restarted trainer counts it), and the next round needs new pairs.
            promoted = await get_active_adapter(parts.redis, DOMAIN)
            assert promoted and registry.get(promoted).round == 1
            await asyncio.to_thread(start_trainer, None)
            skipped = await asyncio.to_thread(train)
            assert skipped["status"] == "skipped" and skipped["round"] == 2 and skipped["pairs"] == 0, skipped
            async with VllmAdminClient(tiny_weak_server) as admin:
                assert promoted in {c.id for c in await admin.models()}

            more = await asyncio.to_thread(send_traffic, orch_url, DOMAIN, GATE_ITEMS + 14)
            await collect_all(parts.named_collector("c2"), parts.store, DOMAIN, more)
            final = await asyncio.to_thread(train)
            assert final["status"] == "promoted" and final["round"] == 2, final
            assert registry.get(final["candidate"]).parent == promoted
            assert await parts.store.round(DOMAIN) == 3
    finally:
        table.stop("trainer", timeout=10)
        for version in registry.versions(DOMAIN):  # the weak server is the session's: leave its slots free
            await parts.swapper.unload(version.name)
        await set_active_adapter(parts.redis, DOMAIN, None)
        await parts.aclose()
