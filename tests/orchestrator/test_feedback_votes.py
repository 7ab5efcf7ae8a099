"""One answer, one vote (issue 20, defect 1): with client keys a feedback's source is the caller's key, so 20
`source` strings from one key are one feedback; the trainer counts one live score per trace, and none for an
answer the adapter version did not write (strong alone, or degraded because the weak model failed)."""

from __future__ import annotations

import httpx
import pytest

from services.orchestrator.app import create_app
from services.trainer.collector import Collector
from services.trainer.store import TrainerStore
from shared import redis_keys
from shared.records import FeedbackRecord, TraceRecord
from tests.support.fake_upstream import fake_upstream
from tests.support.servers import serve_app
from tests.support.settings import orch_settings, trainer_settings

KEYS = ["client-key-a", "client-key-b"]


@pytest.fixture(scope="module")
def app_url(private_redis, tmp_path_factory):
    with fake_upstream("tiny-weak", ["ok"]) as (weak, _), fake_upstream("tiny-strong", ["ok"]) as (strong, _):
        spool = tmp_path_factory.mktemp("s") / "spool.jsonl"
        with serve_app(create_app(orch_settings(weak, strong, private_redis.url, spool, api_keys=KEYS))) as url:
            yield url


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_one_key_gives_one_feedback_per_trace_whatever_its_source(app_url):
    with httpx.Client(base_url=app_url, timeout=30) as client:
        trace_id = client.post("/v1/collaborate", json={"question": "q"}, headers=_auth(KEYS[0])).json()["id"]
        statuses = [
            client.post(
                "/v1/feedback", json={"id": trace_id, "score": 1.0, "source": f"s{i}"}, headers=_auth(KEYS[0])
            ).status_code
            for i in range(20)
        ]
        assert statuses == [202] + [409] * 19
        other = client.post("/v1/feedback", json={"id": trace_id, "score": 0.0}, headers=_auth(KEYS[1]))
        assert other.status_code == 202  # another caller may still say what it saw


class NoCollab:
    async def feedback(self, *args, **kwargs):  # scores only: no model calls
        raise AssertionError("no correct answer was given")


async def _collector(url: str, redis) -> Collector:
    settings = trainer_settings("http://weak", "http://strong", url)
    return Collector(settings, redis, TrainerStore(redis), NoCollab(), consumer="c", reclaim_idle_ms=0)


async def test_live_scores_count_once_per_trace_and_only_for_the_version_that_answered(fresh_redis):
    redis = redis_keys.connect(fresh_redis.url)
    collector = await _collector(fresh_redis.url, redis)
    store = TrainerStore(redis)
    traces = {
        "tr-served": dict(draft="d", mode="collab"),
        "tr-weak-down": dict(draft=None, mode="collab", degraded="weak_unavailable: 503"),
        "tr-strong": dict(draft=None, mode="strong"),
        "tr-strong-down": dict(draft="d", mode="collab", degraded="strong_unavailable: 503"),
    }
    try:
        for trace_id, fields in traces.items():
            trace = TraceRecord(
                trace_id=trace_id, domain="acme", draft_format="cot", question="q", weak_adapter="acme-v1", **fields
            )
            await collector.handle(redis_keys.TRACES_STREAM, trace.to_fields())
        for trace_id in traces:
            for source in ("user", "reviewer", "bot"):  # three sources, one answer: one vote
                record = FeedbackRecord(trace_id=trace_id, source=source, score=1.0)
                await collector.handle(redis_keys.FEEDBACK_STREAM, record.to_fields())
        # tr-served and tr-strong-down (the version's draft was the answer) count, once each.
        assert await store.live_score("acme", "acme-v1") == (2, 1.0)
        assert await store.live_score("acme", None) == (0, None)  # nothing credited to the base model either
    finally:
        await redis.aclose()
