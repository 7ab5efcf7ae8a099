"""Bad input gets an OpenAI-style error with the right status, never a 500."""

from __future__ import annotations

import httpx
import pytest

from services.orchestrator.app import create_app
from tests.support.fake_upstream import fake_upstream
from tests.support.servers import serve_app
from tests.support.settings import orch_settings


@pytest.fixture(scope="module")
def app_url(private_redis, tmp_path_factory):
    with fake_upstream("tiny-weak", ["ok"]) as (weak, _), fake_upstream("tiny-strong", ["ok"]) as (strong, _):
        settings = orch_settings(
            weak, strong, private_redis.url, tmp_path_factory.mktemp("s") / "spool.jsonl", max_body_bytes=10_000
        )
        with serve_app(create_app(settings)) as url:
            yield url


@pytest.mark.parametrize(
    "path,body,status,param",
    [
        ("/v1/collaborate", b"{not json", 422, None),
        ("/v1/collaborate", {"question": 42}, 422, "question"),
        ("/v1/collaborate", {"question": "   "}, 422, None),
        ("/v1/collaborate", {}, 422, None),
        ("/v1/collaborate", {"question": "q", "messages": [{"role": "user", "content": "q"}]}, 422, None),
        ("/v1/collaborate", {"messages": []}, 422, "messages"),
        ("/v1/collaborate", {"question": "q", "draft_format": "poem"}, 422, "draft_format"),
        ("/v1/collaborate", {"question": "q", "domain": "no-such-domain"}, 404, "domain"),
        ("/v1/collaborate", {"question": "q", "strong": {"max_tokens": 100000}}, 422, "max_tokens"),
        ("/v1/collaborate", {"question": "q", "unknown_field": 1}, 422, "unknown_field"),
        ("/v1/chat/completions", b"{not json", 400, None),
        ("/v1/chat/completions", {"model": "cowest"}, 400, "messages"),
        ("/v1/chat/completions", {"model": "cowest", "messages": "hi"}, 400, "messages"),
        ("/v1/chat/completions", {"model": "cowest", "messages": [{"role": "wizard", "content": "x"}]}, 400, None),
        (
            "/v1/chat/completions",
            {"model": "cowest", "n": 2, "messages": [{"role": "user", "content": "x"}]},
            400,
            "n",
        ),
        ("/v1/feedback", {"id": "tr-unknown", "score": 1}, 404, "id"),
        ("/v1/feedback", {"id": "tr-x"}, 422, None),
        ("/v1/feedback", {"score": 1}, 422, "id"),
        ("/v1/feedback", {"id": "tr-x", "score": "high"}, 422, "score"),
    ],
)
def test_bad_input(app_url, path, body, status, param):
    kwargs = (
        {"content": body, "headers": {"content-type": "application/json"}}
        if isinstance(body, bytes)
        else {"json": body}
    )
    r = httpx.post(f"{app_url}{path}", timeout=30, **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"] and error["type"]
    if param:
        assert param in (error["param"] or ""), error


def test_oversized_body_is_413(app_url):
    r = httpx.post(f"{app_url}/v1/collaborate", json={"question": "x" * 20_000})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert r.headers["x-request-id"]


def test_oversized_chunked_body_is_413(app_url):
    def chunks():
        yield b'{"question": "'
        for _ in range(30):
            yield b"x" * 1000
        yield b'"}'

    r = httpx.post(f"{app_url}/v1/collaborate", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_health_endpoints(app_url):
    assert httpx.get(f"{app_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{app_url}/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["redis"] == "ok"
    metrics = httpx.get(f"{app_url}/metrics").text
    assert "cowest_log_backlog" in metrics
    assert 'cowest_requests_total{domain="-",route="/v1/feedback",status="404"}' in metrics  # errors are counted
