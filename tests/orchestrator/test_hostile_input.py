"""Input that used to reach the model work and then fail with a 500 (issue 11, defect 7): text that is not
valid UTF-8 (a lone surrogate), metadata nested hundreds deep, an upstream that answers 200 with a body that
is not JSON or with null usage, a stream that breaks mid-way. Each is a clear 4xx, a degraded answer, or an
error event that ends the stream; never a 500, never a silent end."""

from __future__ import annotations

import json

import httpx
import pytest

from services.orchestrator.app import create_app
from tests.support.fake_upstream import fake_upstream
from tests.support.servers import serve_app
from tests.support.settings import ADMIN, orch_settings

SURROGATE = "caf\ud800"  # json.dumps writes it as the escape "\ud800", which JSON parsers accept


def deep(levels: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(levels):
        value = {"x": value}
    return value


@pytest.fixture(scope="module")
def app_url(private_redis, tmp_path_factory):
    with fake_upstream("tiny-weak", ["ok"]) as (weak, _), fake_upstream("tiny-strong", ["ok"]) as (strong, _):
        spool = tmp_path_factory.mktemp("s") / "spool.jsonl"
        with serve_app(create_app(orch_settings(weak, strong, private_redis.url, spool))) as url:
            yield url


def post(url: str, path: str, body: dict) -> httpx.Response:
    # json.dumps keeps the surrogate as an escape (httpx's own encoder would fail on it client-side).
    return httpx.post(
        f"{url}{path}", content=json.dumps(body), headers={"content-type": "application/json"}, timeout=30
    )


CHAT = {"model": "cowest", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    "path,body,status",
    [
        ("/v1/collaborate", {"question": SURROGATE}, 422),
        ("/v1/collaborate", {"question": "q", "metadata": {"note": SURROGATE}}, 422),
        ("/v1/collaborate", {"question": "q", "metadata": {SURROGATE: 1}}, 422),
        ("/v1/collaborate", {"question": "q", "metadata": deep(300)}, 422),
        ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": SURROGATE}]}, 400),
        ("/v1/chat/completions", {**CHAT, "metadata": deep(300)}, 400),
        ("/v1/feedback", {"id": "tr-x", "comment": SURROGATE}, 422),
    ],
)
def test_text_that_is_not_utf8_and_deep_nesting_are_refused_up_front(app_url, path, body, status):
    r = post(app_url, path, body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_moderate_nesting_is_still_accepted(app_url):
    r = post(app_url, "/v1/collaborate", {"question": "q", "metadata": deep(6)})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("action", ["garbage", "nullusage"])
def test_a_strong_model_answering_nonsense_degrades_to_the_draft(private_redis, tmp_path, action):
    with (
        fake_upstream("tiny-weak", ["ok"], "the draft") as (weak, _),
        fake_upstream("tiny-strong", [action], "strong answer") as (strong, _),
    ):
        settings = orch_settings(weak, strong, private_redis.url, tmp_path / "spool.jsonl", strong_retries=0)
        with serve_app(create_app(settings)) as url:
            r = post(url, "/v1/collaborate", {"question": "q"})
    assert r.status_code == 200, r.text
    body = r.json()
    if action == "garbage":
        assert body["answer"] == "the draft" and body["degraded"].startswith("strong_unavailable")
    else:  # null usage is not an error: the answer stands, without token counts
        assert body["answer"] == "strong answer" and body["degraded"] is None


def test_a_weak_model_answering_nonsense_leaves_the_strong_model_alone(private_redis, tmp_path):
    with (
        fake_upstream("tiny-weak", ["garbage"]) as (weak, _),
        fake_upstream("tiny-strong", ["ok"], "strong answer") as (strong, _),
    ):
        settings = orch_settings(weak, strong, private_redis.url, tmp_path / "spool.jsonl")
        with serve_app(create_app(settings)) as url:
            r = post(url, "/v1/collaborate", {"question": "q"})
    assert r.status_code == 200, r.text
    assert r.json()["answer"] == "strong answer" and r.json()["degraded"].startswith("weak_unavailable")


def test_a_stream_that_breaks_midway_ends_with_an_error_event(private_redis, tmp_path):
    with (
        fake_upstream("tiny-weak", ["ok"]) as (weak, _),
        fake_upstream("tiny-strong", ["badchunk"], "one two three") as (strong, _),
    ):
        settings = orch_settings(weak, strong, private_redis.url, tmp_path / "spool.jsonl")
        with serve_app(create_app(settings)) as url:
            with httpx.stream("POST", f"{url}/v1/chat/completions", json={**CHAT, "stream": True}, timeout=30) as r:
                events = [line[5:].strip() for line in r.iter_lines() if line.startswith("data:")]
    assert events, "no events at all"
    last = events[-1]
    assert last == "[DONE]" or "error" in json.loads(last), events
    assert "error" in json.loads(last)  # tokens went out, then the upstream broke: an error event, not [DONE]


def test_a_domain_spec_with_a_lone_surrogate_is_refused(app_url):
    r = httpx.put(
        f"{app_url}/v1/domains/acme-hostile",
        content=json.dumps(
            {"task": f"Answer about {SURROGATE}.", "answer_format": "a word", "metric": {"type": "exact_match"}}
        ),
        headers={"content-type": "application/json", **ADMIN},
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_domain_spec", r.text
