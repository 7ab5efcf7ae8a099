"""Canary releases on an in-memory Redis and vLLM admin API: the split, the verdict on feedback given during the
canary only, promotion and rollback as state changes, the candidate kept loaded while it runs, rounds paused.
tests/trainer/test_canary.py runs the same on real vLLM, Redis and orchestrator."""

from __future__ import annotations

import json

import pytest

from services.trainer.canary import Arm, CanaryReleases, judge
from services.trainer.registry import DESIRED_DIR, AdapterError, AdapterRegistry
from services.trainer.swap import AdapterSwapper
from shared import redis_keys
from shared.adapters import Canary, get_canary
from tests.support.memory import MemoryRedis, MemoryTrainerStore, MemoryVllmAdmin, register_version, write_adapter
from tests.support.settings import trainer_settings, unit_trainer_settings
from tests.trainer.test_rounds_unit import DOMAIN, heldout, pairs, runner


def test_the_split_follows_the_weight_and_keeps_a_key_on_one_version():
    canary = Canary(adapter="acme-v2", weight=0.3)
    keys = [f"tr-{i}" for i in range(20_000)]
    share = sum(canary.serves(k) for k in keys) / len(keys)
    assert 0.28 < share < 0.32  # binomial sd 0.0032: +-6 sd
    assert all(canary.serves(k) == canary.serves(k) for k in keys[:100])  # a user stays on one version
    other = Canary(adapter="acme-v3", weight=0.3)  # the next canary exposes other users (salted by its name)
    both = sum(canary.serves(k) and other.serves(k) for k in keys) / len(keys)
    assert 0.07 < both < 0.11  # independent: 0.09, not 0.3


def test_the_verdict_waits_for_feedback_on_both_versions_then_compares_means():
    settings = trainer_settings("http://w", "http://s", "redis://x", canary_min_feedback=10, canary_margin=0.05)
    canary = Canary(adapter="acme-v2", weight=0.1, active="acme-v1", started_at=1000.0)

    def verdict(cand: tuple[int, float], act: tuple[int, float], now: float = 1001.0) -> str:
        return judge(canary, Arm("acme-v2", *cand), Arm("acme-v1", *act), settings, now).decision

    assert verdict((9, 0.9), (100, 0.1)) == "wait"  # too few on the candidate
    assert verdict((10, 0.9), (9, 0.1)) == "wait"
    assert verdict((10, 0.56), (10, 0.6)) == "promote"  # within the margin
    assert verdict((10, 0.54), (10, 0.6)) == "rollback"
    assert verdict((0, None), (0, None), now=1000.0 + settings.canary_max_s) == "promote"  # no feedback: the gate's


@pytest.fixture
def releases(tmp_path):
    settings = unit_trainer_settings(tmp_path, rollback_depth=0, canary_weight=0.1, canary_min_feedback=20)
    base = settings.base_model_dir
    registry = AdapterRegistry(settings.adapters_dir)
    redis, admin, store = MemoryRedis(), MemoryVllmAdmin("tiny-weak"), MemoryTrainerStore()
    swapper = AdapterSwapper(settings, registry, redis, admin=admin)
    names = []
    for seed in (1, 2):
        trained = write_adapter(tmp_path / f"trained-{seed}", base, seed=seed)
        names.append(register_version(registry, trained, domain=DOMAIN, base_model_path=base, round=seed))
    return CanaryReleases(settings, redis, store, registry, swapper), redis, admin, store, names


async def test_a_canary_judged_on_its_own_period_is_promoted(releases):
    canaries, redis, admin, store, (v1, v2) = releases
    await canaries.swapper.activate(DOMAIN, v1)
    store.score(v1, 0.9, times=100)  # before the canary: not what v2 is compared with
    canary = await canaries.start(DOMAIN, v2)
    assert canary.active == v1 and canary.baseline == {v1: (100, 90.0), v2: (0, 0.0)}
    assert v2 in admin.loaded and (await get_canary(redis, DOMAIN)) == canary
    announced = json.loads(redis.published[-1][1])
    assert announced == {"domain": DOMAIN, "adapter": v1, "canary": json.loads(canary.model_dump_json())}
    await canaries.swapper.reconcile(DOMAIN)  # a running canary's candidate is wanted: not unloaded
    admin.loaded.pop(v2)  # a replica restarted: reconcile brings the candidate back
    assert await canaries.swapper.reconcile(DOMAIN) == [v2]

    store.score(v1, 0.5, times=20)
    store.score(v2, 0.6, times=19)
    assert (await canaries.check(DOMAIN)).decision == "wait"
    store.score(v2, 0.6)
    verdict = await canaries.check(DOMAIN)
    assert verdict.decision == "promote" and verdict.active.mean == pytest.approx(0.5)  # not 0.9: its own period
    assert await redis.get(redis_keys.active_adapter(DOMAIN)) == v2 and await get_canary(redis, DOMAIN) is None
    assert await redis.lrange(redis_keys.adapter_history(DOMAIN), 0, -1) == [v2, v1]
    assert canaries.registry.get(v2).metrics["canary_promoted"] == 1.0
    assert await canaries.check(DOMAIN) is None
    await canaries.swapper.aclose()
    assert set(admin.loaded) == {v2}  # rollback depth 0: v1 retired after the drain


async def test_a_worse_canary_is_rolled_back_and_unloaded(releases):
    canaries, redis, admin, store, (v1, v2) = releases
    served = canaries.settings.served_adapters_dir
    assert served is not None

    def desired() -> list[str]:  # what a joining replica loads before it is ready (services/weak_server/ready.py)
        return json.loads((served / DESIRED_DIR / f"{DOMAIN}.json").read_text())

    await canaries.swapper.activate(DOMAIN, v1)
    assert desired() == [v1]
    await canaries.start(DOMAIN, v2)
    assert desired() == [v1, v2] and (served / v2 / "adapter_config.json").is_file()
    store.score(v1, 0.8, times=20)
    store.score(v2, 0.3, times=20)
    assert (await canaries.check(DOMAIN)).decision == "rollback"
    assert desired() == [v1]
    assert await redis.get(redis_keys.active_adapter(DOMAIN)) == v1 and await get_canary(redis, DOMAIN) is None
    assert await redis.lrange(redis_keys.adapter_history(DOMAIN), 0, -1) == [v1]
    manifest = canaries.registry.get(v2)
    assert manifest.metrics["canary_promoted"] == 0.0 and "rolled_back_at" in manifest.metrics
    assert manifest.metrics["canary_live_score"] == pytest.approx(0.3)
    await canaries.swapper.aclose()
    assert set(admin.loaded) == {v1}  # the candidate is unloaded once its requests drained


async def test_an_alias_change_ends_the_canary_and_by_hand_needs_one_running(releases):
    canaries, redis, _, _, (v1, v2) = releases
    await canaries.swapper.activate(DOMAIN, v1)
    await canaries.start(DOMAIN, v2)
    with pytest.raises(AdapterError, match="already"):
        await canaries.start(DOMAIN, v1)
    stale = Canary(adapter=v2, weight=0.1, active=None)  # its baseline was read before v1 became active
    with pytest.raises(AdapterError, match="changed to acme-v1 meanwhile"):
        await canaries.swapper.start_canary(DOMAIN, stale)
    await canaries.swapper.rollback(DOMAIN)  # an operator's rollback of the alias
    assert await get_canary(redis, DOMAIN) is None
    assert json.loads(redis.published[-1][1])["canary"] is None
    with pytest.raises(AdapterError, match="no canary"):
        await canaries.promote(DOMAIN)
    with pytest.raises(AdapterError, match="not acme's canary"):
        await canaries.swapper.activate(DOMAIN, v2, from_canary=True)


async def test_no_round_trains_while_a_canary_is_judged_and_a_passed_round_starts_one(tmp_path):
    r, redis, _ = runner(
        tmp_path, MemoryTrainerStore(pairs(8), heldout(8)), {"acme-v1": 1.0, None: 0.0}, canary_weight=0.25
    )
    result = await r.run(DOMAIN)
    assert result.status == "canary" and result.candidate == "acme-v1"
    canary = await get_canary(redis, DOMAIN)
    assert canary is not None and canary.adapter == "acme-v1" and canary.weight == 0.25 and canary.active is None
    assert await redis.get(redis_keys.active_adapter(DOMAIN)) is None  # the alias is untouched until the verdict
    r.store.pending = pairs(8)
    skipped = await r.run(DOMAIN)
    assert skipped.status == "skipped" and "canary of acme-v1" in skipped.detail
