"""The feedback contract (issue 11, defect 1): a score is a finite number in [0, 1]; one feedback per trace and
source; the first correct answer of a question is the gate's reference. The orchestrator refuses what breaks
it; the trainer, which may read records spooled while Redis was away, counts each feedback once."""

from __future__ import annotations

import json
from types import SimpleNamespace
from unittest.mock import AsyncMock

import httpx
import pytest

from services.orchestrator.app import create_app
from services.orchestrator.metrics import Metrics
from services.orchestrator.protocol import FeedbackRequest
from services.orchestrator.routes.feedback import feedback as feedback_route
from services.orchestrator.tracelog import TraceLog
from services.trainer.store import TrainerStore
from shared import redis_keys
from shared.data.example import Example
from shared.records import FeedbackRecord
from tests.support.fake_upstream import fake_upstream
from tests.support.servers import serve_app
from tests.support.settings import orch_settings


@pytest.fixture(scope="module")
def app_url(private_redis, tmp_path_factory):
    with fake_upstream("tiny-weak", ["ok"]) as (weak, _), fake_upstream("tiny-strong", ["ok"]) as (strong, _):
        spool = tmp_path_factory.mktemp("s") / "spool.jsonl"
        with serve_app(create_app(orch_settings(weak, strong, private_redis.url, spool))) as url:
            yield url


def trace(url: str) -> str:
    return httpx.post(f"{url}/v1/collaborate", json={"question": "q"}, timeout=30).json()["id"]


def feedback(url: str, body: dict) -> httpx.Response:
    # json.dumps writes NaN and Infinity as the literals Python's parser (and so FastAPI) accepts.
    return httpx.post(f"{url}/v1/feedback", content=json.dumps(body), headers={"content-type": "application/json"})


@pytest.mark.parametrize("score", [float("nan"), float("inf"), -float("inf"), 1e308, -0.5, 1.5])
def test_a_score_outside_0_1_or_not_finite_is_refused(app_url, score):
    r = feedback(app_url, {"id": trace(app_url), "score": score})
    assert r.status_code == 422 and r.json()["error"]["param"] == "score", r.text


def test_one_feedback_per_trace_and_source(app_url):
    trace_id = trace(app_url)
    assert feedback(app_url, {"id": trace_id, "score": 1.0}).status_code == 202
    again = feedback(app_url, {"id": trace_id, "score": 0.0})
    assert again.status_code == 409 and again.json()["error"]["code"] == "feedback_exists"
    assert feedback(app_url, {"id": trace_id, "score": 0.0, "source": "reviewer"}).status_code == 202


async def test_the_trainer_counts_each_feedback_once_and_keeps_the_first(private_redis):
    redis = redis_keys.connect(private_redis.url)
    store = TrainerStore(redis)
    try:
        await redis.delete(redis_keys.live_scores("contract"), redis_keys.heldout("contract"))
        assert await store.first_feedback("tr-c1", "user", "fb-1")
        assert await store.first_feedback("tr-c1", "user", "fb-1")  # the same record redelivered
        assert not await store.first_feedback("tr-c1", "user", "fb-2")  # a second one (spooled past the API)
        assert await store.add_live_score("contract", "contract-v1", 1.0, "tr-c1")
        assert not await store.add_live_score("contract", "contract-v1", 1.0, "tr-c1")  # redelivered: counted once
        assert await store.live_score("contract", "contract-v1") == (1, 1.0)
        await store.add_heldout(Example(id="h", domain="contract", question="Who?", answer="Ada"))
        await store.add_heldout(Example(id="h2", domain="contract", question="Who?", answer="Mallory"))
        assert [e.answer for e in await store.heldout("contract")] == ["Ada"]
    finally:
        await redis.aclose()


def test_feedback_names_a_trace_not_another_feedback(app_url):
    """Found by the fuzz test: a feedback's own id (also logged once) was accepted as a trace id, and the trainer
    then waited for a trace that could never come."""
    given = feedback(app_url, {"id": trace(app_url), "score": 1.0})
    assert given.status_code == 202
    r = feedback(app_url, {"id": given.json()["id"], "score": 1.0})
    assert r.status_code == 404 and r.json()["error"]["code"] == "trace_not_found"


async def test_a_feedback_cut_off_before_it_was_stored_can_be_sent_again(private_redis, tmp_path):
    """A client whose feedback request died (orchestrator killed, connection lost) sends it again; the retry gets
    202, or 409 only when the first attempt was stored. The chaos run lost a feedback this way: the handler
    claimed (trace, source) in Redis, the process was killed before the XADD, and the retry was refused as a
    duplicate. Here the handler dies where it appends the record; whatever it wrote before that stays."""

    class Killed(BaseException):
        """The process died here."""

    redis = redis_keys.connect(private_redis.url)
    log = TraceLog(redis, tmp_path / "spool.jsonl")
    state = SimpleNamespace(log=log, metrics=Metrics())
    body = FeedbackRequest(id="tr-cutoff-1", score=1.0, source="cutoff")
    await redis.set(redis_keys.logged(body.id), "trace", ex=60)
    append = log._append
    try:
        log._append = AsyncMock(side_effect=Killed)  # type: ignore[method-assign]
        with pytest.raises(Killed):
            await feedback_route(body, state, None)  # type: ignore[arg-type]
        log._append = append  # type: ignore[method-assign]
        receipt = await feedback_route(body, state, None)  # type: ignore[arg-type]
        stored = [FeedbackRecord.from_fields(f) for _, f in await redis.xrange(redis_keys.FEEDBACK_STREAM)]
        assert [r.feedback_id for r in stored if r.trace_id == body.id] == [receipt.id]
    finally:
        log.close()
        await redis.aclose()
