"""A domain's default mode: the best measured candidate (ties to the cheaper), bound to the adapter version it was
measured with, honoured by the orchestrator for requests without a mode and shown by /v1/domains."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from services.orchestrator.app import create_app
from shared import redis_keys
from shared.adapters import set_active_adapter
from shared.modes import choose, set_default_mode
from tests.support.fake_upstream import fake_upstream
from tests.support.servers import serve_app
from tests.support.settings import orch_settings


def test_the_best_candidate_wins_and_a_tie_goes_to_the_cheaper():
    best = choose({"weak": 0.4, "strong_retrieval": 0.55, "collab": 0.5}, 20, "d-v1")
    assert (best.choice, best.mode, best.lookup) == ("strong_retrieval", "strong", True)
    tie = choose({"weak": 0.5, "strong_retrieval": 0.45, "collab": 0.5}, 20, "d-v1")
    assert (tie.choice, tie.mode, tie.lookup) == ("weak", "weak", None) and "tied with collaboration" in tie.reason
    assert choose({"collab": 0.6, "weak": 0.5}, 20, "d-v1").choice == "collab"
    assert "20 training questions" in best.reason
    with pytest.raises(ValueError):
        choose({}, 20, "d-v1")


async def test_requests_without_a_mode_get_the_measured_default_of_the_version_they_draft_with(
    private_redis, tmp_path
):
    domain = "modes-test"
    redis = redis_keys.connect(private_redis.url)
    with (
        fake_upstream("weak-m", ["ok"], "Draft.\nAnswer: 3", (f"{domain}-v1", f"{domain}-v2")) as (weak_url, weak),
        fake_upstream("strong-m", ["ok"], "Work: x\nAnswer: 3") as (strong_url, strong),
    ):
        settings = orch_settings(
            weak_url,
            strong_url,
            private_redis.url,
            tmp_path / "spool.jsonl",
            weak_model="weak-m",
            strong_model="strong-m",
            draft_policy="adapter",
        )
        try:
            await set_active_adapter(redis, domain, f"{domain}-v1")
            await set_default_mode(redis, domain, choose({"weak": 0.6, "collab": 0.5}, 20, f"{domain}-v1"))
            with serve_app(create_app(settings)) as url:
                ask = {"question": "What is code 3?", "domain": domain}
                weak_only = httpx.post(f"{url}/v1/collaborate", json=ask).json()
                assert weak_only["mode"] == "weak" and "measured default" in weak_only["mode_reason"]
                assert weak_only["answer"] == "Draft.\nAnswer: 3" and not strong.calls  # no strong call paid for
                forced = httpx.post(f"{url}/v1/collaborate", json=ask | {"mode": "collab"}).json()
                assert forced["mode"] == "collab" and forced["mode_reason"] == "the request's mode"
                info = httpx.get(f"{url}/v1/domains/{domain}").json()
                assert info["default_mode"] == "weak" and info["default_mode_measured"]["adapter"] == f"{domain}-v1"
                # A new version is not bound by the old measurement: the collaboration until it is measured.
                await set_active_adapter(redis, domain, f"{domain}-v2")
                for _ in range(50):
                    if httpx.get(f"{url}/v1/domains/{domain}").json()["active_adapter"] == f"{domain}-v2":
                        break
                    await asyncio.sleep(0.1)
                after = httpx.post(f"{url}/v1/collaborate", json=ask).json()
                assert after["mode"] == "collab" and "no measured default" in after["mode_reason"]
        finally:
            await redis.delete(
                redis_keys.DEFAULT_MODES, redis_keys.active_adapter(domain), redis_keys.adapter_history(domain)
            )
            await redis.srem(redis_keys.ACTIVE_DOMAINS, domain)
            await redis.aclose()
