"""The swapper's state machine (validate -> load -> verify -> flip -> history; rollback; reconcile) on an
in-memory Redis and vLLM admin API, with the real adapter registry on disk. test_round.py runs the same on
real vLLM and Redis."""

from __future__ import annotations

import pytest

from services.trainer.registry import AdapterError, AdapterRegistry
from services.trainer.swap import AdapterSwapper
from shared import redis_keys
from tests.support.memory import MemoryRedis, MemoryVllmAdmin, register_version, write_adapter
from tests.support.settings import unit_trainer_settings

DOMAIN = "acme"


@pytest.fixture
def parts(tmp_path):
    settings = unit_trainer_settings(tmp_path, rollback_depth=1)
    base = settings.base_model_dir
    registry = AdapterRegistry(settings.adapters_dir)
    redis, admin = MemoryRedis(), MemoryVllmAdmin("tiny-weak", no_op={"acme-v3"})
    swapper = AdapterSwapper(settings, registry, redis, admin=admin)

    def register(seed: int) -> str:
        trained = write_adapter(tmp_path / f"trained-{seed}", base, seed=seed)
        return register_version(registry, trained, domain=DOMAIN, base_model_path=base, round=seed)

    return swapper, redis, admin, register


async def test_activate_flips_the_alias_keeps_history_and_announces(parts):
    swapper, redis, admin, register = parts
    v1, v2 = register(1), register(2)
    await swapper.activate(DOMAIN, v1)
    await swapper.activate(DOMAIN, v2)
    assert await redis.get(redis_keys.active_adapter(DOMAIN)) == v2
    assert await redis.lrange(redis_keys.adapter_history(DOMAIN), 0, -1) == [v2, v1]
    assert [c for c, _ in redis.published] == [redis_keys.ADAPTER_CHANGED_CHANNEL] * 2
    await swapper.aclose()  # waits for the retirement of versions beyond the rollback depth (none here)
    assert set(admin.loaded) == {v1, v2}


async def test_rollback_goes_back_one_version_then_to_the_base_model(parts):
    swapper, redis, _, register = parts
    v1, v2 = register(1), register(2)
    await swapper.activate(DOMAIN, v1)
    await swapper.activate(DOMAIN, v2)
    assert await swapper.rollback(DOMAIN) == v1 and await redis.get(redis_keys.active_adapter(DOMAIN)) == v1
    assert await swapper.rollback(DOMAIN) is None and await redis.get(redis_keys.active_adapter(DOMAIN)) is None
    with pytest.raises(AdapterError, match="no adapter to roll back"):
        await swapper.rollback(DOMAIN)


async def test_a_no_op_or_altered_adapter_never_becomes_active(parts, tmp_path):
    swapper, redis, admin, register = parts
    good, _, no_op = register(1), register(2), register(3)
    await swapper.activate(DOMAIN, good)
    with pytest.raises(AdapterError, match="does not change"):
        await swapper.activate(DOMAIN, no_op)
    assert no_op not in admin.loaded  # unloaded again after the failed verification
    altered = register(4)
    (swapper.registry.path(altered) / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(AdapterError, match="sha256"):
        await swapper.activate(DOMAIN, altered)
    assert await redis.get(redis_keys.active_adapter(DOMAIN)) == good


async def test_reconcile_reloads_what_the_server_lost(parts):
    swapper, _, admin, register = parts
    v1, v2 = register(1), register(2)
    await swapper.activate(DOMAIN, v1)
    await swapper.activate(DOMAIN, v2)
    admin.loaded.clear()  # vLLM restarted
    assert await swapper.reconcile(DOMAIN) == [v2, v1]
    assert set(admin.loaded) == {v1, v2} and await swapper.reconcile(DOMAIN) == []


async def test_reconcile_unloads_a_version_nobody_wants_once_stale_and_no_round_runs(parts):
    """A round's candidate stayed loaded on vLLM when its trainer was killed mid-gate: a LoRA slot lost until
    vLLM restarted."""
    swapper, redis, admin, register = parts
    v1, orphan = register(1), register(2)
    await swapper.activate(DOMAIN, v1)
    await swapper.retired()  # the activation's retire pass (drain_s=0) is over
    await swapper.load_verified(orphan)
    swapper.stale_after_s = 0.0
    redis.locked.add(redis_keys.round_lock(DOMAIN))  # a round runs: the candidate it gates stays loaded
    await swapper.reconcile(DOMAIN)
    assert orphan in admin.loaded
    redis.locked.clear()
    await swapper.reconcile(DOMAIN)
    assert orphan not in admin.loaded and v1 in admin.loaded


async def test_flip_and_history_change_in_one_transaction(parts):
    """A kill between the alias flip and the history push left an alias its history did not explain."""
    swapper, redis, _, register = parts
    v1, v2 = register(1), register(2)
    await swapper.activate(DOMAIN, v1)
    await swapper.activate(DOMAIN, v2)
    await swapper.rollback(DOMAIN)
    flips = [t for t in redis.transactions if "publish" in t]
    # the alias, the set of domains, the end of any canary, the history and the announcement: one MULTI each
    promotion, rollback = ["set", "sadd", "delete", "lpush", "publish"], ["set", "sadd", "delete", "lpop", "publish"]
    assert flips == [promotion] * 2 + [rollback]


def test_a_torn_manifest_is_an_adapter_error_and_updates_are_atomic(parts):
    swapper, _, _, register = parts
    v1, v2 = register(1), register(2)
    swapper.registry.update_metrics(v1, {"gate_items": 4.0})
    assert swapper.registry.get(v1).metrics["gate_items"] == 4.0
    assert not list(swapper.registry.path(v1).glob(".*.tmp"))  # written next to it, then renamed
    (swapper.registry.path(v2) / "cowest-adapter.json").write_text('{"name": "acme-v2", "dom')  # a torn write
    with pytest.raises(AdapterError, match="unreadable manifest"):
        swapper.registry.get(v2)
    assert [m.name for m in swapper.registry.versions(DOMAIN)] == [v1]  # listing skips it, does not crash


async def test_names_stay_inside_the_registry_and_no_lock_is_left_per_name(parts):
    swapper, _, _, _ = parts
    for name in ("../../etc-v1", "/abs-v1", "a:b-v1", "acme/../..-v1", "acme"):
        with pytest.raises(AdapterError):
            swapper.registry.path(name)
    for i in range(50):  # rollbacks of domains that never had an adapter
        with pytest.raises(AdapterError):
            await swapper.rollback(f"nothing-{i}")
    assert swapper._locks == {} and swapper._users == {}
