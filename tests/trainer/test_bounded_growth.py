"""Bounded growth (issue 11, defect 8): the gate scores a stable sample of at most gate_max_items, domains and
aliases are found through sets instead of keyspace SCANs on every pass, and the streams lose only what the
trainer has read and acknowledged."""

from __future__ import annotations

from services.orchestrator.adapters import AdapterAliases
from services.trainer.app import Trainer
from services.trainer.collector import Collector
from services.trainer.store import TrainerStore
from shared import redis_keys
from shared.adapters import set_active_adapter
from shared.records import TraceRecord
from tests.support.memory import MemoryTrainerStore, ScoredCollab
from tests.support.settings import trainer_settings
from tests.trainer.test_rounds_unit import DOMAIN, heldout, pairs, runner


async def test_the_gate_scores_a_bounded_stable_sample(tmp_path):
    r, _, _ = runner(tmp_path, MemoryTrainerStore(pairs(8), heldout(30)), {"acme-v1": 1.0}, gate_max_items=5)
    assert (await r.run(DOMAIN)).status == "promoted"
    assert isinstance(r.collab, ScoredCollab) and len(r.collab.asked) == 2 * 5  # both versions, 5 items each


def no_scan(*args, **kwargs):
    raise AssertionError("a keyspace SCAN on a periodic pass")


async def test_domains_and_aliases_are_read_from_sets_after_one_migration(private_redis):
    redis = redis_keys.connect(private_redis.url)
    trainer = Trainer(trainer_settings("http://weak", "http://strong", private_redis.url))
    aliases = AdapterAliases(redis)
    try:
        await set_active_adapter(redis, "setdomain", "setdomain-v1")
        await TrainerStore(redis).put_pairs("setdomain", "q?", [])
        assert "setdomain" in await trainer.domains()  # the first pass may SCAN once (state from before the set)
        await aliases.refresh()
        trainer.redis.scan_iter = no_scan  # type: ignore[method-assign]
        redis.scan_iter = no_scan  # type: ignore[method-assign]
        await set_active_adapter(redis, "setdomain2", "setdomain2-v4")
        await TrainerStore(redis).put_pairs("setdomain2", "q?", [])
        assert {"setdomain", "setdomain2"} <= set(await trainer.domains())
        await aliases.refresh()
        assert aliases.get("setdomain2") == "setdomain2-v4" and aliases.get("setdomain") == "setdomain-v1"
    finally:
        for d in ("setdomain", "setdomain2"):
            await set_active_adapter(redis, d, None)
        await trainer.aclose()
        await redis.aclose()


async def test_streams_lose_only_what_the_trainer_acknowledged(fresh_redis):
    redis = redis_keys.connect(fresh_redis.url)
    settings = trainer_settings("http://weak", "http://strong", fresh_redis.url, stream_retention_s=0)
    collector = Collector(settings, redis, TrainerStore(redis), collab=None, consumer="c")  # type: ignore[arg-type]
    try:
        await collector.ensure_groups()
        for i in range(5):
            trace = TraceRecord(trace_id=f"tr-{i}", domain="acme", draft_format="cot", question=f"q{i}")
            await redis.xadd(redis_keys.TRACES_STREAM, trace.to_fields())
        read = await redis.xreadgroup(redis_keys.TRAINER_GROUP, "c", {redis_keys.TRACES_STREAM: ">"}, count=5)
        ids = [entry_id for entry_id, _ in read[0][1]]
        await redis.xack(redis_keys.TRACES_STREAM, redis_keys.TRAINER_GROUP, *ids[:3])
        await redis.xadd(redis_keys.TRACES_STREAM, {"kind": "trace", "id": "unread", "data": "{}"})
        removed = await collector.trim(now_ms=10**15)
        left = [entry_id for entry_id, _ in await redis.xrange(redis_keys.TRACES_STREAM)]
        assert removed == 3 and left[:2] == ids[3:] and len(left) == 3  # pending and unread entries stay
    finally:
        await redis.aclose()
