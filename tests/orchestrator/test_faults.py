"""Faults degrade gracefully: strong 429/5xx/hangs, weak down, both down, Redis down and back,
orchestrator restart with a spool. Fake upstreams stand in only where a fault must be scripted."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack, contextmanager

import httpx
import pytest

from services.orchestrator.app import create_app
from tests.support.fake_upstream import fake_upstream
from tests.support.servers import free_port, serve_app
from tests.support.settings import ADMIN, orch_settings


def collaborate(url: str, question: str = "Why is the sky blue?", **kw) -> httpx.Response:
    return httpx.post(f"{url}/v1/collaborate", json={"question": question, **kw}, timeout=60)


@pytest.fixture
def weak_fake():
    with fake_upstream("tiny-weak", ["ok"], text="draft from the weak model") as (url, fake):
        yield url, fake


@contextmanager
def run_with_strong(weak_url, script, redis_url, tmp_path, **overrides):
    """(orchestrator url, fake strong) for one scripted strong endpoint."""
    with ExitStack() as stack:
        strong_url, fake = stack.enter_context(fake_upstream("tiny-strong", script, text="refined answer"))
        settings = orch_settings(weak_url, strong_url, redis_url, tmp_path / "spool.jsonl", **overrides)
        yield stack.enter_context(serve_app(create_app(settings))), fake


def test_strong_429_is_retried_after_retry_after(weak_fake, private_redis, tmp_path):
    with run_with_strong(weak_fake[0], ["429", "ok"], private_redis.url, tmp_path) as (url, strong):
        body = collaborate(url).json()
    assert body["answer"] == "refined answer" and body["degraded"] is None
    assert [c["action"] for c in strong.calls] == ["429", "ok"]
    assert strong.calls[1]["t"] - strong.calls[0]["t"] >= 0.9  # waited the Retry-After second


def test_strong_5xx_falls_back_to_the_draft(weak_fake, private_redis, tmp_path):
    with run_with_strong(weak_fake[0], ["500"], private_redis.url, tmp_path, strong_retries=1) as (url, strong):
        body = collaborate(url).json()
        metrics = httpx.get(f"{url}/metrics").text
    assert len(strong.calls) == 2  # one try + one retry
    assert body["answer"] == "draft from the weak model"
    assert body["degraded"].startswith("strong_unavailable") and "500" in body["degraded"]
    assert 'cowest_degraded_total{domain="general",reason="strong_unavailable"} 1.0' in metrics


def test_strong_hang_times_out_and_degrades(weak_fake, private_redis, tmp_path):
    with run_with_strong(
        weak_fake[0], ["hang"], private_redis.url, tmp_path, strong_timeout_s=1.0, strong_retries=0
    ) as (url, _):
        t0 = time.monotonic()
        body = collaborate(url).json()
        assert time.monotonic() - t0 < 10
    assert body["degraded"].startswith("strong_unavailable") and "timed out" in body["degraded"]


def test_strong_failure_with_fallback_error_is_503(weak_fake, private_redis, tmp_path):
    with run_with_strong(
        weak_fake[0], ["500"], private_redis.url, tmp_path, strong_retries=0, strong_fallback="error"
    ) as (url, _):
        r = collaborate(url)
    assert r.status_code == 503 and r.json()["error"]["code"] == "strong_unavailable"
    assert r.headers["retry-after"] and r.headers["x-cowest-trace-id"]


def test_weak_down_answers_with_the_strong_model_alone(private_redis, tmp_path):
    down = f"http://127.0.0.1:{free_port()}"
    with run_with_strong(down, ["ok"], private_redis.url, tmp_path) as (url, strong):
        body = collaborate(url).json()
        ready = httpx.get(f"{url}/readyz")
    assert body["answer"] == "refined answer" and body["draft"] is None
    assert body["degraded"].startswith("weak_unavailable")
    assert "drafted" not in strong.calls[0]["body"]["messages"][-1]["content"]  # the strong-alone prompt
    # Degraded, not unready: the strong model carries the traffic, so a load balancer must keep this replica.
    assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    assert ready.json()["checks"]["weak"].startswith("unavailable") and ready.json()["checks"]["strong"] == "ok"


def test_both_down_is_a_clear_503(private_redis, tmp_path):
    settings = orch_settings(
        f"http://127.0.0.1:{free_port()}",
        f"http://127.0.0.1:{free_port()}",
        private_redis.url,
        tmp_path / "spool.jsonl",
        strong_retries=0,
    )
    with serve_app(create_app(settings)) as url:
        r = collaborate(url)
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "models_unavailable" and "weak" in r.json()["error"]["message"]


def test_streaming_falls_back_to_the_draft(weak_fake, private_redis, tmp_path):
    with run_with_strong(weak_fake[0], ["500"], private_redis.url, tmp_path, strong_retries=0) as (url, _):
        with httpx.stream(
            "POST",
            f"{url}/v1/chat/completions",
            timeout=30,
            json={"model": "cowest", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        ) as r:
            events = [ln[5:].strip() for ln in r.iter_lines() if ln.startswith("data:")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "draft from the weak model"
    assert any(
        (c.get("cowest") or {}).get("degraded", "") and "strong_unavailable" in c["cowest"]["degraded"] for c in chunks
    )


def test_request_id_and_traceparent_reach_the_model_servers(weak_fake, private_redis, tmp_path):
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with run_with_strong(weak_fake[0], ["ok"], private_redis.url, tmp_path) as (url, strong):
        httpx.post(
            f"{url}/v1/collaborate",
            json={"question": "q"},
            headers={"X-Request-Id": "rid-7", "traceparent": parent},
            timeout=30,
        )
    for call in (weak_fake[1].calls[-1], strong.calls[-1]):
        assert call["headers"]["x-request-id"] == "rid-7" and call["headers"]["traceparent"] == parent


def _stream_ids(client, stream: str) -> list[str]:
    return [fields["id"] for _, fields in client.xrange(stream)]


def test_redis_outage_loses_nothing_and_duplicates_nothing(weak_fake, fresh_redis, tmp_path):
    with run_with_strong(weak_fake[0], ["ok"], fresh_redis.url, tmp_path) as (url, _):
        ids = [collaborate(url).json()["id"] for _ in range(3)]
        fresh_redis.stop()
        t0 = time.monotonic()
        during = [collaborate(url) for _ in range(4)]
        assert time.monotonic() - t0 < 10  # a dead Redis does not stall requests
        assert all(r.status_code == 200 for r in during)
        ids += [r.json()["id"] for r in during]
        fb = httpx.post(f"{url}/v1/feedback", json={"id": ids[-1], "label": "ok"})
        assert fb.status_code == 202  # a recent trace: known locally, so accepted while Redis is down
        ready = httpx.get(f"{url}/readyz").json()
        assert ready["checks"]["redis"].startswith("unavailable") and ready["checks"]["log_backlog"] == 5
        fresh_redis.start()
        deadline = time.monotonic() + 15
        while httpx.get(f"{url}/readyz").json()["checks"]["log_backlog"] and time.monotonic() < deadline:
            time.sleep(0.2)
        ids += [collaborate(url).json()["id"]]
    client = fresh_redis.client()
    assert _stream_ids(client, "cowest:traces") == ids  # all of them, once each, in order
    assert [json.loads(f["data"])["trace_id"] for _, f in client.xrange("cowest:feedback")] == [ids[6]]


def test_registering_a_domain_while_redis_is_down_is_a_503_and_leaves_nothing_half_registered(
    weak_fake, fresh_redis, tmp_path
):
    spec = {
        "task": "Answer questions about Acme's parts.",
        "answer_format": "a part name",
        "metric": {"type": "exact_match"},
    }
    with run_with_strong(weak_fake[0], ["ok"], fresh_redis.url, tmp_path) as (url, _):
        fresh_redis.stop()
        r = httpx.put(f"{url}/v1/domains/acme", json=spec, headers=ADMIN, timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "redis_unavailable", r.text
        assert r.headers["Retry-After"] == "5"
        assert httpx.get(f"{url}/v1/domains/acme", timeout=10).status_code == 404  # not served half-registered
        fresh_redis.start()
        deadline = time.monotonic() + 15
        while (
            r := httpx.put(f"{url}/v1/domains/acme", json=spec, headers=ADMIN, timeout=30)
        ).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert r.status_code == 201, r.text  # the failed attempt stored nothing: this is a new registration
        assert httpx.get(f"{url}/v1/domains/acme", timeout=10).status_code == 200


def test_spool_survives_an_orchestrator_restart(weak_fake, fresh_redis, tmp_path):
    fresh_redis.stop()
    with run_with_strong(weak_fake[0], ["ok"], fresh_redis.url, tmp_path) as (url, _):
        ids = [collaborate(url).json()["id"] for _ in range(3)]
    spool = tmp_path / "spool.jsonl"
    assert len(spool.read_text().splitlines()) == 3  # still on disk after shutdown
    # As if the previous process died after shipping one record but before trimming the spool:
    # the replay must not store that record twice.
    fresh_redis.start()
    first = json.loads(spool.read_text().splitlines()[0])
    fresh_redis.client().eval("return 0", 0)  # Redis is up
    import redis as redis_sync

    from services.orchestrator.tracelog import KEEP_IDS_S, XADD_ONCE
    from shared.redis_keys import logged

    sync = redis_sync.Redis.from_url(fresh_redis.url)
    fields = first["fields"]
    sync.eval(
        XADD_ONCE,
        2,
        first["stream"],
        logged(fields["id"]),
        KEEP_IDS_S,
        1000,
        fields["kind"],
        *[x for kv in fields.items() for x in kv],
    )
    with run_with_strong(weak_fake[0], ["ok"], fresh_redis.url, tmp_path) as (url, _):
        deadline = time.monotonic() + 15
        while httpx.get(f"{url}/readyz").json()["checks"]["log_backlog"] and time.monotonic() < deadline:
            time.sleep(0.2)
    assert _stream_ids(fresh_redis.client(), "cowest:traces") == ids
    assert spool.read_text() == ""
