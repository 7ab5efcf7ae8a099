"""/v1/collaborate end to end: the active adapter, the trace in Redis, feedback, alias switches."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from services.weak_server.admin_client import VllmAdminClient
from shared import redis_keys
from shared.adapters import set_active_adapter
from shared.prompts import weak_messages

pytestmark = pytest.mark.slow
QUESTION = "Why is the sky blue?"


def collaborate(url: str, **body) -> httpx.Response:
    payload = {"question": QUESTION, "weak": {"temperature": 0}, "strong": {"temperature": 0}, **body}
    return httpx.post(f"{url}/v1/collaborate", json=payload, timeout=60)


def direct_draft(weak_url: str, model: str) -> str:
    r = httpx.post(
        f"{weak_url}/v1/chat/completions",
        timeout=60,
        json={"model": model, "messages": weak_messages(QUESTION), "max_tokens": 8, "temperature": 0},
    )
    return r.json()["choices"][0]["message"]["content"]


def set_alias(redis_url: str, adapter: str | None) -> None:
    async def go():
        client = redis_keys.connect(redis_url)
        await set_active_adapter(client, "general", adapter)
        await client.aclose()

    asyncio.run(go())


def wait_for_adapter(url: str, adapter: str | None, within: float = 5.0) -> httpx.Response:
    """Poll until a response reports `adapter`; the swap must land within `within` seconds (else fail: a
    response still drafted by the old version is not a result)."""
    deadline = time.monotonic() + within
    while True:
        r = collaborate(url)
        if r.json()["weak"]["adapter"] == adapter:
            return r
        assert time.monotonic() < deadline, f"still {r.json()['weak']['adapter']!r}, not {adapter!r}, after {within}s"


def trace_fields(redis_client, trace_id: str) -> dict:
    for _, fields in redis_client.xrange("cowest:traces"):
        if fields["id"] == trace_id:
            return fields
    raise AssertionError(f"{trace_id} not in cowest:traces")


def test_collaborate_logs_a_complete_trace_and_takes_feedback(orchestrator, private_redis):
    r = collaborate(orchestrator, metadata={"user": "u1"}, draft_format="cot")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == r.headers["x-cowest-trace-id"] and body["answer"] and body["draft"]
    assert body["weak"]["model"] == "tiny-weak" and body["strong"]["model"] == "tiny-strong"
    assert body["weak"]["latency_ms"] > 0 and body["strong"]["usage"]["completion_tokens"] > 0
    assert body["degraded"] is None and body["latency_ms"] >= body["weak"]["latency_ms"]

    fields = trace_fields(private_redis.client(), body["id"])
    assert fields["kind"] == "trace" and fields["schema_version"] == "1"
    trace = json.loads(fields["data"])
    for key, value in {
        "trace_id": body["id"],
        "question": QUESTION,
        "draft": body["draft"],
        "answer": body["answer"],
        "domain": "general",
        "draft_format": "cot",
        "weak_model": "tiny-weak",
        "strong_model": "tiny-strong",
        "degraded": None,
        "request_id": r.headers["x-request-id"],
        "metadata": {"user": "u1"},
    }.items():
        assert trace[key] == value, key
    assert trace["weak_latency_ms"] and trace["strong_latency_ms"] and trace["created_at"]

    fb = httpx.post(
        f"{orchestrator}/v1/feedback",
        json={"id": body["id"], "score": 0.5, "label": "good", "correct_answer": "Rayleigh scattering"},
    )
    assert fb.status_code == 202, fb.text
    entries = [json.loads(f["data"]) for _, f in private_redis.client().xrange("cowest:feedback")]
    mine = [e for e in entries if e["trace_id"] == body["id"]]
    assert len(mine) == 1 and mine[0]["score"] == 0.5 and mine[0]["correct_answer"] == "Rayleigh scattering"


def test_return_draft_false_hides_the_draft(orchestrator):
    body = collaborate(orchestrator, return_draft=False).json()
    assert body["draft"] is None and body["answer"]


def test_request_id_is_echoed(orchestrator):
    r = httpx.post(
        f"{orchestrator}/v1/collaborate", json={"question": "hi"}, headers={"X-Request-Id": "my-req-42"}, timeout=60
    )
    assert r.headers["x-request-id"] == "my-req-42"


def test_active_adapter_is_used_and_switches_without_restart(
    orchestrator, private_redis, tiny_weak_server, tiny_adapters
):
    async def load():
        async with VllmAdminClient(tiny_weak_server) as admin:
            if "general-v1" not in {c.id for c in await admin.models()}:
                await admin.load_lora_adapter("general-v1", str(tiny_adapters["adapter-a"]))

    asyncio.run(load())
    base_draft = direct_draft(tiny_weak_server, "tiny-weak")
    try:
        set_alias(private_redis.url, "general-v1")
        r = wait_for_adapter(orchestrator, "general-v1")
        body = r.json()
        assert body["weak"]["adapter"] == "general-v1" and body["weak"]["adapter_version"] == "v1"
        # The draft is what the adapter writes, and differs from the base model's draft.
        assert body["draft"] == direct_draft(tiny_weak_server, "general-v1") != base_draft
        models = httpx.get(f"{orchestrator}/v1/models").json()["data"]
        assert next(m for m in models if m["id"] == "cowest")["active_adapter"] == "general-v1"

        set_alias(private_redis.url, "adapter-b")
        assert wait_for_adapter(orchestrator, "adapter-b").json()["draft"] == direct_draft(
            tiny_weak_server, "adapter-b"
        )
    finally:
        set_alias(private_redis.url, None)
    body = wait_for_adapter(orchestrator, None).json()
    assert body["weak"]["adapter"] is None and body["draft"] == base_draft
    metrics = httpx.get(f"{orchestrator}/metrics").text
    assert "cowest_stage_latency_seconds_bucket" in metrics and "cowest_requests_total" in metrics


def test_adapter_override_pins_a_version_for_one_request(orchestrator, private_redis, tiny_weak_server, tiny_adapters):
    """What evaluation of a version that is not (or no longer) active relies on."""
    set_alias(private_redis.url, None)
    wait_for_adapter(orchestrator, None)
    body = collaborate(orchestrator, adapter="adapter-b").json()
    assert body["weak"]["adapter"] == "adapter-b" and body["draft"] == direct_draft(tiny_weak_server, "adapter-b")
    try:
        set_alias(private_redis.url, "adapter-a")
        wait_for_adapter(orchestrator, "adapter-a")
        body = collaborate(orchestrator, adapter="base").json()  # the base model despite an active adapter
        assert body["weak"]["adapter"] is None and body["draft"] == direct_draft(tiny_weak_server, "tiny-weak")
    finally:
        set_alias(private_redis.url, None)
    r = collaborate(orchestrator, adapter="no-such-adapter")
    assert r.status_code == 404 and r.json()["error"]["code"] == "adapter_not_found"
    r = collaborate(orchestrator, adapter="tiny-weak")  # the base model's own name is not an adapter
    assert r.status_code == 404 and r.json()["error"]["param"] == "adapter"
