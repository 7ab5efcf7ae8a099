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


@pytest.mark.parametrize(
    "path,body,status,param,limit",
    [
        ("/v1/feedback", {"id": "tr-x", "correct_answer": "4" * 4001}, 422, "correct_answer", 4000),
        ("/v1/feedback", {"id": "tr-x", "label": "l" * 257}, 422, "label", 256),
        ("/v1/collaborate", {"question": "q", "user": "u" * 257}, 422, "user", 256),
        (
            "/v1/chat/completions",
            {"model": "m" * 257, "messages": [{"role": "user", "content": "x"}]},
            400,
            "model",
            256,
        ),
    ],
)
def test_a_field_over_its_length_limit_is_refused_and_the_message_says_the_limit(
    app_url, path, body, status, param, limit
):
    r = httpx.post(f"{app_url}{path}", json=body, timeout=30)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert param in (error["param"] or "") and f"at most {limit} characters" in error["message"], error


def test_free_text_limits_are_the_documented_ones():
    """The README's line of limits is what the models enforce (a limit changed in one place only fails here)."""
    from pathlib import Path

    from services.orchestrator import protocol

    readme = " ".join((Path(__file__).parents[2] / "README.md").read_text().split())
    line = readme[readme.index("Limits on what a request may carry") :][:600]
    expected = {
        "one message's content": protocol.MAX_PROMPT_CHARS,
        "`correct_answer`": protocol.MAX_ANSWER_CHARS,
        "`label`": protocol.MAX_NAME_CHARS,
    }
    for field, limit in expected.items():
        assert f"{field} {limit:,}" in line, (field, limit, line)


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


def _series(metrics: str, name: str) -> int:
    return sum(1 for line in metrics.splitlines() if line.startswith(name + "{"))


def test_odd_paths_add_no_metric_series(app_url):
    """Paths a client makes up count under their route template ("unmatched" when none): thousands of random
    paths must not add a Prometheus series each (defect: 600 probes made 600 series)."""
    with httpx.Client(base_url=app_url, timeout=30) as client:
        before = _series(client.get("/metrics").text, "cowest_requests_total")
        for i in range(2000):
            path = f"/v1/domains/probe-{i}-x" if i % 2 else f"/no/such/path/{i}"
            assert client.get(path).status_code == 404
        after = client.get("/metrics").text
    assert _series(after, "cowest_requests_total") - before <= 4, after
    assert 'route="/v1/domains/{name}"' in after and 'route="unmatched"' in after
