"""The typed client against a real orchestrator (fake model servers, real Redis), and its retry policy against a
scripted server: Retry-After honoured, one request id across retries, no retry on a 4xx."""

from __future__ import annotations

import time

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from cowest_client import AsyncCowestClient, Collaboration, CowestClient, CowestError
from services.orchestrator.app import create_app
from tests.support.fake_upstream import fake_upstream
from tests.support.servers import serve_app
from tests.support.settings import orch_settings

KEY = "sk-client-test"


@pytest.fixture(scope="module")
def orchestrator(private_redis, tmp_path_factory):
    with fake_upstream("tiny-weak", ["ok"]) as (weak, _), fake_upstream("tiny-strong", ["ok"]) as (strong, _):
        spool = tmp_path_factory.mktemp("s") / "spool.jsonl"
        settings = orch_settings(weak, strong, private_redis.url, spool, api_keys=[KEY])
        with serve_app(create_app(settings)) as url:
            yield url


def test_sync_client_collaborates_gives_feedback_and_lists_models(orchestrator, monkeypatch):
    monkeypatch.setenv("COWEST_URL", orchestrator + "/v1")  # an OpenAI-style base URL works too
    monkeypatch.setenv("COWEST_API_KEY", KEY)
    with CowestClient() as client:
        answer = client.collaborate("What is 2+2?", request_id="req-mine")
        assert isinstance(answer, Collaboration) and answer.answer and answer.mode == "collab"
        assert answer.weak.latency_ms is not None and answer.draft
        receipt = client.feedback(answer.id, score=1.0, label="correct")
        assert receipt.trace_id == answer.id and receipt.status == "accepted"
        with pytest.raises(CowestError) as info:  # one feedback per trace and source: a 409, not retried
            client.feedback(answer.id, score=0.0, request_id="req-dup")
        assert info.value.status == 409 and info.value.code == "feedback_exists"
        assert info.value.request_id == "req-dup" and not info.value.retryable
        assert any(m.id for m in client.models())


def test_without_the_key_the_error_says_so(orchestrator, monkeypatch):
    monkeypatch.delenv("COWEST_API_KEY", raising=False)
    with CowestClient(orchestrator, max_retries=0) as client, pytest.raises(CowestError) as info:
        client.collaborate("q")
    assert info.value.status == 401 and info.value.type


async def test_async_client_does_the_same(orchestrator):
    async with AsyncCowestClient(orchestrator, api_key=KEY) as client:
        answer = await client.collaborate("What is 2+2?", domain="general", mode="strong")
        assert answer.mode == "strong" and answer.domain == "general"
        assert (await client.feedback(answer.id, correct_answer="4")).trace_id == answer.id
        assert await client.models()


@pytest.fixture
def flaky():
    """/v1/collaborate answers 429 (Retry-After: 1) twice, then a collaboration; /v1/feedback always 400."""
    app, seen = FastAPI(), []

    @app.post("/v1/collaborate")
    async def collaborate(request: Request):
        seen.append((time.monotonic(), request.headers.get("x-request-id")))
        if len(seen) <= 2:
            err = {"error": {"message": "slow down", "type": "rate_limit_error", "code": None, "param": None}}
            return JSONResponse(err, status_code=429, headers={"Retry-After": "1"})
        stage = {"model": "m", "latency_ms": 1.0}
        body = {"id": "tr-1", "domain": "general", "mode": "collab", "answer": "4", "weak": stage, "strong": stage}
        return {**body, "latency_ms": 2.0, "new_field": "kept"}

    @app.post("/v1/feedback")
    async def feedback(request: Request):
        seen.append((time.monotonic(), request.headers.get("x-request-id")))
        err = {"error": {"message": "bad", "type": "invalid_request_error", "code": None, "param": "score"}}
        return JSONResponse(err, status_code=400)

    with serve_app(app) as url:
        yield url, seen


def test_429_is_retried_after_retry_after_with_one_request_id(flaky):
    url, seen = flaky
    with CowestClient(url, max_retries=2) as client:
        answer = client.collaborate("q")
    assert answer.answer == "4" and answer.model_extra == {"new_field": "kept"}
    assert len(seen) == 3 and len({rid for _, rid in seen}) == 1
    assert all(later - earlier >= 0.95 for (earlier, _), (later, _) in zip(seen, seen[1:], strict=False))


async def test_out_of_retries_the_429_reaches_the_caller_and_a_400_is_never_retried(flaky):
    url, seen = flaky
    async with AsyncCowestClient(url, max_retries=1) as client:
        with pytest.raises(CowestError) as info:
            await client.collaborate("q")
        assert info.value.status == 429 and info.value.retry_after == 1.0 and len(seen) == 2
        with pytest.raises(CowestError) as info:
            await client.feedback("tr-1", score=2)
        assert info.value.status == 400 and info.value.param == "score" and len(seen) == 3


def test_an_unreachable_server_is_a_cowest_error_after_the_retries():
    with CowestClient("http://127.0.0.1:9", max_retries=1, timeout=2) as client, pytest.raises(CowestError) as info:
        client.models()
    assert info.value.status is None and info.value.retryable
