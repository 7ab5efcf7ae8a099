"""Domains registered at runtime: a spec PUT to the orchestrator is served at once (no code change, no restart),
reaches every process through Redis, and a malformed one gets a clear 4xx, never a 500."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from shared import domains, redis_keys
from tests.support.settings import ADMIN

pytestmark = pytest.mark.slow  # real tiny vLLM servers behind the orchestrator

SPEC = {
    "task": "Answer questions about Acme's parts catalogue.",
    "answer_format": "a part name",
    "metric": {"type": "exact_match"},
}


def ask(url: str, domain: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/collaborate",
        json={"question": "Which part is code 9?", "domain": domain, "mode": "strong", "strong": {"max_tokens": 4}},
        timeout=60,
    )


@pytest.mark.parametrize(
    "body, status, needle",
    [
        ({**SPEC, "metric": {"type": "labels"}}, 422, "labels"),
        ({**SPEC, "name": "other"}, 422, "registered as"),
        ({**SPEC, "unknown_field": 1}, 422, "unknown_field"),
        (["not", "an", "object"], 422, "dictionary"),
        ({**SPEC, "task": "x" * 5000}, 422, "task"),
    ],
)
def test_a_malformed_spec_is_a_clear_4xx(orchestrator, body, status, needle):
    r = httpx.put(f"{orchestrator}/v1/domains/acme-bad", json=body, headers=ADMIN, timeout=10)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert needle in error["message"] and error["type"] == "invalid_request_error"
    assert httpx.get(f"{orchestrator}/v1/domains/acme-bad", timeout=10).status_code == 404


def test_built_in_domains_cannot_be_replaced_and_names_are_checked(orchestrator):
    r = httpx.put(f"{orchestrator}/v1/domains/synthetic", json=SPEC, headers=ADMIN, timeout=10)
    assert r.status_code == 409 and r.json()["error"]["code"] == "domain_builtin"
    assert httpx.put(f"{orchestrator}/v1/domains/Bad%20Name", json=SPEC, headers=ADMIN, timeout=10).status_code == 422


def test_a_registered_domain_is_served_at_once_and_reaches_other_processes(orchestrator, private_redis):
    assert ask(orchestrator, "acme").status_code == 404  # unknown before registration
    r = httpx.put(f"{orchestrator}/v1/domains/acme", json=SPEC, headers=ADMIN, timeout=10)
    assert r.status_code == 201 and r.json()["name"] == "acme"
    assert ask(orchestrator, "acme").status_code == 200
    assert (
        httpx.put(
            f"{orchestrator}/v1/domains/acme", json=SPEC | {"answer_format": "a name"}, headers=ADMIN, timeout=10
        ).status_code
        == 200
    )  # replaced
    info = httpx.get(f"{orchestrator}/v1/domains/acme", timeout=10).json()
    assert info["builtin"] is False and info["spec"]["answer_format"] == "a name"
    listed = {d["name"]: d for d in httpx.get(f"{orchestrator}/v1/domains", timeout=10).json()["data"]}
    assert listed["acme"]["spec"]["metric"]["type"] == "exact_match" and listed["synthetic"]["builtin"] is True
    assert "cowest/acme" in {m["id"] for m in httpx.get(f"{orchestrator}/v1/models", timeout=10).json()["data"]}
    stored = json.loads(private_redis.client().hget(redis_keys.DOMAIN_SPECS, "acme"))
    assert stored["answer_format"] == "a name"

    # Another process (another orchestrator replica, the trainer) registers a domain: it is stored in Redis and
    # announced; this orchestrator picks it up from there without a restart.
    other = {**SPEC, "name": "acme-two", "task": "Answer questions about Acme's second catalogue."}
    client = private_redis.client()
    client.hset(redis_keys.DOMAIN_SPECS, "acme-two", json.dumps(other))
    client.publish(redis_keys.DOMAINS_CHANGED_CHANNEL, "acme-two")
    deadline = time.monotonic() + 10
    while (r := ask(orchestrator, "acme-two")).status_code == 404 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert r.status_code == 200, r.text
    assert domains.get("acme-two").task == other["task"]

    # A stored entry that no longer validates is skipped, not fatal to the others.
    client.hset(redis_keys.DOMAIN_SPECS, "acme-broken", json.dumps({"task": ""}))
    client.publish(redis_keys.DOMAINS_CHANGED_CHANNEL, "acme-broken")
    # Announcements are handled in order: once a valid one sent after it is served, the broken one was handled.
    client.hset(redis_keys.DOMAIN_SPECS, "acme-three", json.dumps({**other, "name": "acme-three"}))
    client.publish(redis_keys.DOMAINS_CHANGED_CHANNEL, "acme-three")
    deadline = time.monotonic() + 10
    while (r := ask(orchestrator, "acme-three")).status_code == 404 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert r.status_code == 200, r.text
    assert ask(orchestrator, "acme-two").status_code == 200 and ask(orchestrator, "acme-broken").status_code == 404
    client.hdel(redis_keys.DOMAIN_SPECS, "acme", "acme-two", "acme-broken", "acme-three")
