"""Accepted feedback is never lost to lag or a short outage (issue 20, defects 4, 5 and 10): feedback waits for its
trace as long as the trace can still arrive, and is dead-lettered (never dropped) past that; a failing entry backs
off per entry, so a strong server down for 10 s still yields every pair; dead letters can be replayed; and a
redelivery after a round claimed a feedback's pairs pairs nothing again."""

from __future__ import annotations

import time

import httpx

from services.trainer.collab import Feedback
from services.trainer.collector import TRACE_WAIT_S, Collector
from services.trainer.pairs import ScoredDraft
from services.trainer.store import TrainerStore, is_heldout
from shared import redis_keys
from shared.records import FeedbackRecord, TraceRecord
from tests.support.settings import trainer_settings


class Collab:
    """Collaborative feedback whose strong server is down until `down_until` (then a draft that helped)."""

    def __init__(self, down_until: float = 0.0):
        self.down_until, self.calls = down_until, 0

    async def feedback(self, question, domain, adapter, reference, context=None, seed=None):
        self.calls += 1
        if time.monotonic() < self.down_until:
            raise httpx.ConnectError("strong: connection refused")
        drafts = [ScoredDraft("good", "x", 1.0), ScoredDraft("bad", "y", 0.0)]
        return Feedback(question=question, prompt=[], strong_alone="", strong_alone_score=0.0, drafts=drafts)


def collector(url: str, redis, collab, **settings) -> Collector:
    config = trainer_settings("http://weak", "http://strong", url, **settings)
    return Collector(config, redis, TrainerStore(redis), collab, consumer="c", reclaim_idle_ms=0)


async def add(redis, i: int, created_at: float | None = None, trace: bool = True) -> FeedbackRecord:
    if trace:
        record = TraceRecord(trace_id=f"tr-{i}", domain="acme", draft_format="cot", question=f"question {i}?")
        await redis.xadd(redis_keys.TRACES_STREAM, record.to_fields())
    fb = FeedbackRecord(trace_id=f"tr-{i}", correct_answer="x", **({"created_at": created_at} if created_at else {}))
    await redis.xadd(redis_keys.FEEDBACK_STREAM, fb.to_fields())
    return fb


async def test_a_strong_server_down_for_10_s_costs_no_pair(fresh_redis):
    redis = redis_keys.connect(fresh_redis.url)
    collab = Collab(down_until=time.monotonic() + 10)
    c = collector(fresh_redis.url, redis, collab, retry_base_s=1.0)
    try:
        await c.ensure_groups()
        for i in range(5):
            await add(redis, i)
        paired = [i for i in range(5) if not is_heldout("acme", f"question {i}?")]  # the others go to the gate
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and len(await c.store.pending_pairs("acme")) < len(paired):
            await c.poll(block_ms=200)
        assert len(await c.store.pending_pairs("acme")) == len(paired) > 0  # all paired once the server was back
        assert len(await c.store.heldout("acme")) == 5 - len(paired)
        assert await redis.xlen(redis_keys.DEAD_LETTER_STREAM) == 0
        assert collab.calls <= 5 * 6  # backed off: a few tries each, not one per pass (~200 passes)
    finally:
        await redis.aclose()


async def test_feedback_waits_for_a_logged_trace_however_old_and_is_dead_lettered_not_dropped(fresh_redis):
    redis = redis_keys.connect(fresh_redis.url)
    c = collector(fresh_redis.url, redis, Collab())
    old = time.time() - TRACE_WAIT_S - 60
    try:
        await c.ensure_groups()
        # A trace logged by the orchestrator but not read yet (say, behind a backlog): its feedback waits.
        await redis.set(redis_keys.logged("tr-1"), "trace")
        await add(redis, 1, created_at=old, trace=False)
        await add(redis, 2, created_at=old, trace=False)  # never logged, and past the wait: dead-lettered
        await c.poll(block_ms=50)
        assert c.waiting == 1
        dead = await redis.xrange(redis_keys.DEAD_LETTER_STREAM)
        assert [FeedbackRecord.from_fields(f).trace_id for _, f in dead] == ["tr-2"]
        assert "never seen" in dead[0][1]["dead_error"]
        # The trace turns up (it was in a spool): replaying the dead letter pairs it.
        trace = TraceRecord(trace_id="tr-2", domain="acme", draft_format="cot", question="question 2?")
        await redis.xadd(redis_keys.TRACES_STREAM, trace.to_fields())
        assert await c.replay_dead() == 1 and await redis.xlen(redis_keys.DEAD_LETTER_STREAM) == 0
        trace = TraceRecord(trace_id="tr-1", domain="acme", draft_format="cot", question="question 1?")
        await redis.xadd(redis_keys.TRACES_STREAM, trace.to_fields())
        for _ in range(3):
            await c.poll(block_ms=50)
        expected = sum(not is_heldout("acme", f"question {i}?") for i in (1, 2))
        assert len(await c.store.pending_pairs("acme")) == expected and c.waiting == 0
        assert await redis.xlen(redis_keys.DEAD_LETTER_STREAM) == 0
    finally:
        await redis.aclose()


async def test_a_redelivery_after_the_round_claimed_the_pairs_pairs_nothing_again(fresh_redis):
    redis = redis_keys.connect(fresh_redis.url)
    collab = Collab()
    c = collector(fresh_redis.url, redis, collab)
    try:
        await c.ensure_groups()
        trace = TraceRecord(trace_id="tr-9", domain="acme", draft_format="cot", question="question 9?")
        await c.handle(redis_keys.TRACES_STREAM, trace.to_fields())
        fb = FeedbackRecord(trace_id="tr-9", correct_answer="x")
        await c.handle(redis_keys.FEEDBACK_STREAM, fb.to_fields())
        assert len(await c.store.claim_pairs("acme", 1)) == 1  # a round took the pair (then the process died)
        await c.handle(redis_keys.FEEDBACK_STREAM, fb.to_fields())  # the unacknowledged entry, redelivered
        assert collab.calls == 1  # no second round of model calls
        assert await redis.hlen(redis_keys.pending_pairs("acme")) == 0  # and nothing for the next round to train
    finally:
        await redis.aclose()


async def test_every_acknowledged_feedback_is_counted_once_by_what_became_of_it(fresh_redis):
    """An acknowledged feedback entry is never unaccounted for: each ends as exactly one counted outcome (or in
    the dead-letter stream), and a redelivered entry (a crash before the ack) is not counted twice."""
    redis = redis_keys.connect(fresh_redis.url)
    c = collector(fresh_redis.url, redis, Collab())
    try:
        await c.ensure_groups()
        asked = [i for i in range(40) if not is_heldout("acme", f"question {i}?")][:2]
        held = next(i for i in range(40) if is_heldout("acme", f"question {i}?"))
        for i in (*asked, held):
            await add(redis, i)
        trace = TraceRecord(trace_id="tr-x", domain="acme", draft_format="cot", question=f"question {asked[0]}?")
        await redis.xadd(redis_keys.TRACES_STREAM, trace.to_fields())
        entries = [
            FeedbackRecord(trace_id=f"tr-{asked[0]}", correct_answer="y", source="again"),  # the question has pairs
            FeedbackRecord(trace_id=f"tr-{asked[1]}", correct_answer="y"),  # the same source twice
            FeedbackRecord(trace_id=f"tr-{asked[1]}", score=0.5, source="rater"),
            FeedbackRecord(trace_id="tr-x", label="nice"),
        ]
        for fb in entries:
            await redis.xadd(redis_keys.FEEDBACK_STREAM, fb.to_fields())
        await redis.xadd(redis_keys.FEEDBACK_STREAM, {"data": "{not json"})
        for _ in range(3):
            await c.poll(block_ms=50)
        outcomes = await c.store.feedback_outcomes()
        assert outcomes == {
            "paired": 2,
            "heldout": 1,
            "question_waiting": 1,
            "repeat_source": 1,
            "score_only": 1,
            "no_reference": 1,
            "malformed": 1,
        }, outcomes
        assert sum(outcomes.values()) == await redis.xlen(redis_keys.FEEDBACK_STREAM)
        # Redelivered (handled again, then acknowledged again): still counted once.
        entry_id, fields = (await redis.xrange(redis_keys.FEEDBACK_STREAM))[0]
        await c._handle_and_ack(redis_keys.FEEDBACK_STREAM, entry_id, fields)
        assert await c.store.feedback_outcomes() == outcomes
    finally:
        await redis.aclose()


def test_the_trainer_reports_waiting_and_dead_letters_and_replays_them(fresh_redis, tmp_path):
    import redis as sync_redis

    from services.trainer.app import create_app
    from tests.support.servers import serve_app
    from tests.support.settings import ADMIN_KEY

    client = sync_redis.Redis.from_url(fresh_redis.url, decode_responses=True)
    client.xadd(redis_keys.DEAD_LETTER_STREAM, {**FeedbackRecord(trace_id="tr-d").to_fields(), "dead_stream": "x"})
    settings = trainer_settings("http://weak", "http://strong", fresh_redis.url, adapters_dir=tmp_path / "a")
    with serve_app(create_app(settings)) as url:
        metrics = httpx.get(f"{url}/metrics").text
        assert "cowest_trainer_feedback_waiting 0.0" in metrics and "cowest_dead_letter_entries 1.0" in metrics
        client.hset(redis_keys.FEEDBACK_OUTCOMES, "paired", 3)
        assert 'cowest_feedback_outcomes{outcome="paired"} 3.0' in httpx.get(f"{url}/metrics").text
        assert httpx.post(f"{url}/dead-letter/replay").status_code == 401  # an admin route
        r = httpx.post(f"{url}/dead-letter/replay", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert r.status_code == 200 and r.json() == {"replayed": 0}  # "x" is no stream of ours: left there
    client.close()


async def test_the_trainer_keeps_only_what_joining_needs_for_its_configured_time(fresh_redis):
    """Issue 20, defect 15: the trainer's copy of a trace is bounded in size (no answer, draft or usage) and in time
    (`trace_keep_s`)."""
    redis = redis_keys.connect(fresh_redis.url)
    c = collector(fresh_redis.url, redis, Collab(), trace_keep_s=3600)
    try:
        trace = TraceRecord(
            trace_id="tr-m", domain="acme", draft_format="cot", question="q?", draft="d" * 5000, answer="a" * 5000
        )
        await c.handle(redis_keys.TRACES_STREAM, trace.to_fields())
        kept = await redis.get(redis_keys.seen_trace("tr-m"))
        assert len(kept) < 400 and "ddd" not in kept and "aaa" not in kept
        assert 0 < await redis.ttl(redis_keys.seen_trace("tr-m")) <= 3600
        assert (await c.store.trace("tr-m"))["drafted"] is True
    finally:
        await redis.aclose()
