"""Do no harm where the weak model knows nothing: by default a domain without an active adapter is answered by
the strong model alone, the response says which path ran, and a request can still ask for any path."""

from __future__ import annotations

import time

import httpx
from openai import OpenAI

from services.orchestrator.app import create_app
from shared import redis_keys
from shared.adapters import set_active_adapter
from tests.support.fake_upstream import fake_upstream
from tests.support.servers import serve_app
from tests.support.settings import orch_settings


def ask(url: str, **kw) -> dict:
    r = httpx.post(f"{url}/v1/collaborate", json={"question": "Name two primary colours.", **kw}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


async def test_no_draft_until_the_domain_has_an_adapter(private_redis, tmp_path):
    with (
        fake_upstream("tiny-weak", ["ok"], "The answer is: 3", ("shop-v1",)) as (weak_url, weak),
        fake_upstream("tiny-strong", ["ok"], "Red and blue.") as (strong_url, strong),
    ):
        settings = orch_settings(
            weak_url,
            strong_url,
            private_redis.url,
            tmp_path / "spool.jsonl",
            draft_policy="adapter",
            domains=["general", "shop"],
        )
        with serve_app(create_app(settings)) as url:
            body = ask(url)
            assert (body["mode"], body["draft"], body["answer"], body["degraded"]) == (
                "strong",
                None,
                "Red and blue.",
                None,
            )
            assert weak.calls == [] and "drafted" not in strong.calls[-1]["body"]["messages"][-1]["content"]
            chat = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0).chat.completions.create(
                model="cowest", messages=[{"role": "user", "content": "Name two primary colours."}]
            )
            assert chat.model_extra["cowest"]["mode"] == "strong" and weak.calls == []

            # Asked for explicitly, the base model's draft still runs.
            assert ask(url, mode="collab")["draft"] == "The answer is: 3" and len(weak.calls) == 1

            # Once the domain has an adapter, its drafts are used.
            redis = redis_keys.connect(private_redis.url)
            try:
                await set_active_adapter(redis, "shop", "shop-v1")
                deadline = time.monotonic() + 10
                while (body := ask(url, domain="shop"))["mode"] != "collab" and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert body["mode"] == "collab" and body["weak"]["adapter"] == "shop-v1"
                assert weak.calls[-1]["body"]["model"] == "shop-v1"
            finally:
                await set_active_adapter(redis, "shop", None)
                await redis.aclose()
