"""The trainer's collector survives what used to stop it or loop it forever (issue 11, defect 3): an entry
whose handling always fails is dead-lettered after `max_deliveries` and acknowledged, the entries after it are
still handled, and a loop that raises is restarted."""

from __future__ import annotations

import asyncio
import time

from services.trainer.collab import Feedback
from services.trainer.collector import Collector
from services.trainer.store import TrainerStore
from shared import redis_keys
from shared.records import FeedbackRecord, TraceRecord
from shared.supervise import supervised
from tests.support.settings import trainer_settings


class FailingCollab:
    """Collaborative feedback that fails for one question (as a prompt over the weak context would)."""

    def __init__(self, poison: str):
        self.poison, self.calls = poison, []

    async def feedback(self, question, domain, adapter, reference, context=None, seed=None):
        self.calls.append(question)
        if question == self.poison:
            raise RuntimeError("weak: 400 prompt longer than the model's context")
        return Feedback(question=question, prompt=[], strong_alone="", strong_alone_score=0.0, drafts=[])


async def test_a_poison_entry_is_dead_lettered_and_the_rest_still_flows(fresh_redis):
    redis = redis_keys.connect(fresh_redis.url)
    settings = trainer_settings("http://weak", "http://strong", fresh_redis.url, max_deliveries=3, retry_base_s=0)
    collab = FailingCollab("poison question?")
    collector = Collector(settings, redis, TrainerStore(redis), collab, consumer="c", reclaim_idle_ms=0)
    try:
        await collector.ensure_groups()
        for i, question in enumerate(["poison question?", "an ordinary question?"]):
            trace = TraceRecord(trace_id=f"tr-{i}", domain="acme", draft_format="cot", question=question)
            await redis.xadd(redis_keys.TRACES_STREAM, trace.to_fields())
            fb = FeedbackRecord(trace_id=f"tr-{i}", correct_answer="x")
            await redis.xadd(redis_keys.FEEDBACK_STREAM, fb.to_fields())
        for _ in range(6):
            await collector.poll(block_ms=50)
        dead = await redis.xrange(redis_keys.DEAD_LETTER_STREAM)
        assert len(dead) == 1 and dead[0][1]["dead_stream"] == redis_keys.FEEDBACK_STREAM
        assert "prompt longer" in dead[0][1]["dead_error"]
        assert collab.calls.count("poison question?") == 3  # max_deliveries, then never again
        assert collab.calls.count("an ordinary question?") == 1 and collector.processed == 1
        pending = await redis.xpending(redis_keys.FEEDBACK_STREAM, redis_keys.TRAINER_GROUP)
        assert pending["pending"] == 0
    finally:
        await redis.aclose()


async def test_a_loop_that_raises_is_restarted():
    runs = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise ConnectionError("Redis went away")
        await asyncio.sleep(3600)

    task = asyncio.create_task(supervised("flaky", flaky, base_s=0.01))
    deadline = time.monotonic() + 10
    while len(runs) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    task.cancel()
    assert len(runs) == 3


async def test_feedback_read_before_its_trace_waits_for_it_then_counts_once(fresh_redis):
    """The feedback stream can be read first (two streams, one consumer group); the entry must stay pending until
    its trace arrives, then be handled exactly once, and a redelivery must not run the model calls again."""
    redis = redis_keys.connect(fresh_redis.url)
    collab = FailingCollab(poison="none")
    collector = Collector(
        trainer_settings("http://weak", "http://strong", fresh_redis.url),
        redis,
        TrainerStore(redis),
        collab,
        consumer="c",
        reclaim_idle_ms=0,
    )
    try:
        await collector.ensure_groups()
        fb = FeedbackRecord(trace_id="tr-late", correct_answer="x")
        await redis.xadd(redis_keys.FEEDBACK_STREAM, fb.to_fields())
        await collector.poll(block_ms=50)
        pending = await redis.xpending(redis_keys.FEEDBACK_STREAM, redis_keys.TRAINER_GROUP)
        assert pending["pending"] == 1 and collab.calls == []  # waits: nothing to join it with yet
        trace = TraceRecord(trace_id="tr-late", domain="acme", draft_format="cot", question="an ordinary question?")
        await redis.xadd(redis_keys.TRACES_STREAM, trace.to_fields())
        for _ in range(3):
            await collector.poll(block_ms=50)
        assert collab.calls == ["an ordinary question?"]
        assert (await redis.xpending(redis_keys.FEEDBACK_STREAM, redis_keys.TRAINER_GROUP))["pending"] == 0
        await collector.handle(redis_keys.FEEDBACK_STREAM, fb.to_fields())  # the same entry delivered again
        assert collab.calls == ["an ordinary question?"]  # its pairs wait: no second round of model calls
    finally:
        await redis.aclose()
