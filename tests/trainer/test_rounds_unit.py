"""A round's decisions (skip, promote, reject, fail) with the DPO job, the store, the gate's collaborations and
the swapper in memory; test_round.py runs whole rounds on real trl, vLLM and Redis."""

from __future__ import annotations

import asyncio

from services.trainer.pairs import PreferencePair
from services.trainer.registry import AdapterRegistry
from services.trainer.rounds import RoundRunner
from services.trainer.swap import AdapterSwapper
from shared import redis_keys
from shared.data.example import Example
from tests.support.memory import MemoryRedis, MemoryTrainerStore, MemoryVllmAdmin, ScoredCollab, write_adapter
from tests.support.settings import unit_trainer_settings

DOMAIN = "acme"


def pairs(n: int) -> list[PreferencePair]:
    return [
        PreferencePair(
            pair_id=f"p{i}",
            domain=DOMAIN,
            round=1,
            question_id=f"q{i}",
            prompt=[{"role": "user", "content": f"q{i}"}],
            chosen="good",
            rejected="bad",
            chosen_delta=1.0,
            rejected_delta=0.0,
            strong_alone_score=0.0,
        )
        for i in range(n)
    ]


def heldout(n: int) -> list[Example]:
    return [Example(id=f"h{i}", domain=DOMAIN, question=f"held-out {i}?", answer="x") for i in range(n)]


def runner(tmp_path, store, scores, fail_job=False, **settings_overrides):
    settings = unit_trainer_settings(tmp_path, min_pairs_per_round=4, gate_min_items=4, **settings_overrides)
    base = settings.base_model_dir
    registry, redis = AdapterRegistry(settings.adapters_dir), MemoryRedis()
    swapper = AdapterSwapper(settings, registry, redis, admin=MemoryVllmAdmin("tiny-weak"))
    jobs = []

    async def job(kind, cfg):
        jobs.append(cfg)
        if fail_job:
            raise RuntimeError("dpo job failed with exit -9 (SIGKILL: most likely out of memory)")
        write_adapter(tmp_path / "out" / str(len(jobs)), base, seed=len(jobs))
        import shutil

        shutil.copytree(tmp_path / "out" / str(len(jobs)), cfg.output_dir)
        return {"loss": [0.69, 0.5]}

    collab = ScoredCollab(scores)
    return RoundRunner(settings, redis, store, registry, swapper, collab, job_runner=job), redis, jobs


async def test_too_few_pairs_or_gate_items_skip_without_training(tmp_path):
    few = MemoryTrainerStore(pairs(3), heldout(8))
    r, _, jobs = runner(tmp_path, few, {})
    assert (await r.run(DOMAIN)).status == "skipped" and not jobs and few.counter == 1
    thin_gate = MemoryTrainerStore(pairs(8), heldout(2))
    r, _, jobs = runner(tmp_path, thin_gate, {})
    result = await r.run(DOMAIN)
    assert result.status == "skipped" and "held-out" in result.detail and not jobs


async def test_a_better_candidate_is_promoted_and_the_round_advances(tmp_path):
    store = MemoryTrainerStore(pairs(8), heldout(8))
    r, redis, jobs = runner(tmp_path, store, {"acme-v1": 1.0, None: 0.0})
    result = await r.run(DOMAIN)
    assert result.status == "promoted" and result.candidate == "acme-v1", result.detail
    assert await redis.get(redis_keys.active_adapter(DOMAIN)) == "acme-v1" and store.counter == 2
    assert jobs[0].max_steps == 4  # 2 epochs x 8 pairs / batch 4: steps follow the data


async def test_a_worse_candidate_is_rejected_and_never_served(tmp_path):
    store = MemoryTrainerStore(pairs(8), heldout(8))
    r, redis, _ = runner(tmp_path, store, {"acme-v1": 0.0, None: 1.0})
    result = await r.run(DOMAIN)
    assert result.status == "rejected" and await redis.get(redis_keys.active_adapter(DOMAIN)) is None
    assert store.counter == 2 and "acme-v1" not in await r.swapper.loaded()


async def test_a_failed_job_keeps_the_claim_and_the_round_number(tmp_path):
    store = MemoryTrainerStore(pairs(8), heldout(8))
    r, redis, _ = runner(tmp_path, store, {}, fail_job=True)
    result = await r.run(DOMAIN)
    assert result.status == "failed" and "SIGKILL" in result.detail
    assert (
        store.counter == 1
        and len(store.claimed[1]) == 8
        and await redis.get(redis_keys.active_adapter(DOMAIN)) is None
    )
    assert not redis.locked  # the round lock is released


async def test_one_round_per_domain_at_a_time(tmp_path):
    store = MemoryTrainerStore(pairs(8), heldout(8))
    r, redis, jobs = runner(tmp_path, store, {"acme-v1": 1.0})
    redis.locked.add(redis_keys.round_lock(DOMAIN))  # another trainer's round holds it
    result = await r.run(DOMAIN)
    assert result.status == "skipped" and "another round" in result.detail and not jobs


async def test_the_round_lock_is_renewed_while_a_long_job_runs(tmp_path, private_redis):
    """The lock's TTL is 1 s and the job takes 2.5 s: without renewal a second trainer would start the same
    round meanwhile."""
    store = MemoryTrainerStore(pairs(8), heldout(8))
    first, _, _ = runner(tmp_path / "a", store, {"acme-v1": 1.0}, lock_ttl_s=1)
    second, _, _ = runner(tmp_path / "b", MemoryTrainerStore(pairs(8), heldout(8)), {}, lock_ttl_s=1)
    shared = redis_keys.connect(private_redis.url)
    first.redis = second.redis = shared  # both trainers lock through the same real Redis
    slow = first.run_job

    async def long_job(kind, cfg):
        await asyncio.sleep(2.5)
        return await slow(kind, cfg)

    first.run_job = long_job
    try:
        running = asyncio.create_task(first.run(DOMAIN))
        await asyncio.sleep(1.8)  # past the TTL
        blocked = await second.run(DOMAIN)
        assert blocked.status == "skipped" and "another round" in blocked.detail
        assert (await running).status == "promoted"
    finally:
        await shared.delete(redis_keys.round_lock(DOMAIN), redis_keys.active_adapter(DOMAIN))
        await shared.aclose()
