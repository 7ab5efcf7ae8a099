"""`cowest sft / train / adapters` and the trainer service's API, against the tiny models on real vLLM."""

from __future__ import annotations

import asyncio
import json
import os
from urllib.parse import urlparse

import httpx
import pytest
from typer.testing import CliRunner

from cowest.cli import app
from services.trainer.app import create_app
from services.trainer.store import is_heldout
from shared import redis_keys
from shared.adapters import Canary, set_canary
from tests.support.metrics import scored_by_length
from tests.support.servers import TEST_HOME, serve_app
from tests.support.settings import ADMIN, trainer_settings

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture
def stack_env(monkeypatch, tiny_weak_server, tiny_strong_server, private_redis, tmp_path):
    """Point the CLI at the session's tiny servers as if `cowest up --profile tiny` had started them."""
    for key, value in {
        "COWEST_HOME": str(TEST_HOME / "home"),
        "COWEST_PROFILE": "tiny",
        "COWEST_WEAK_PORT": str(urlparse(tiny_weak_server).port),
        "COWEST_STRONG_PORT": str(urlparse(tiny_strong_server).port),
        "COWEST_REDIS_URL": private_redis.url,
        "COWEST_TRAINER_ADAPTERS_DIR": str(tmp_path / "adapters"),
        "COWEST_TRAINER_K_DRAFTS": "4",
        "COWEST_TRAINER_DRAFT_TEMPERATURE": "1.0",
        "COWEST_TRAINER_DRAFT_MAX_TOKENS": "16",
        "COWEST_TRAINER_STRONG_MAX_TOKENS": "16",
        "COWEST_TRAINER_GATE_TOLERANCE": "1.0",
        "COWEST_TRAINER_GATE_MIN_ITEMS": "1",
        "COWEST_TRAINER_MIN_PAIRS_FORCED": "1",
        "COWEST_TRAINER_DRAIN_S": "0",
    }.items():
        monkeypatch.setenv(key, value)
    for key in [
        k
        for k in __import__("os").environ
        if k in ("COWEST_WEAK_URL", "COWEST_STRONG_URL", "COWEST_TRAINER_BASE_MODEL_DIR")
    ]:
        monkeypatch.delenv(key, raising=False)
    return tmp_path


def data_file(path, n: int) -> str:
    rows = [
        {
            "id": f"q{i}",
            "question": f"What is code {i}?",
            "answer": f"code {i} means part {i}",
            "rationale": f"The catalogue lists code {i} as part {i}.",
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


async def with_redis(url: str, call) -> None:
    redis = redis_keys.connect(url)
    try:
        await call(redis)
    finally:
        await redis.aclose()


def test_sft_then_adapters_list_show_rollback(stack_env):
    domain = "clisft"
    result = runner.invoke(
        app,
        [
            "sft",
            "--domain",
            domain,
            "--data",
            data_file(stack_env / "d.jsonl", 8),
            "--steps",
            "3",
            "--learning-rate",
            "0.01",
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"{domain}-v1: SFT loss" in result.output and f"active for {domain}" in result.output
    listed = runner.invoke(app, ["adapters", "list", "--domain", domain])
    assert f"{domain}-v1" in listed.output and "sft" in listed.output and "*" in listed.output
    shown = runner.invoke(app, ["adapters", "show", f"{domain}-v1"])
    assert '"kind": "sft"' in shown.output and '"round": 0' in shown.output
    back = runner.invoke(app, ["adapters", "rollback", "--domain", domain])
    assert back.exit_code == 0 and "the base model" in back.output
    canary = Canary(adapter=f"{domain}-v1", weight=0.1)
    asyncio.run(with_redis(os.environ["COWEST_REDIS_URL"], lambda r: set_canary(r, domain, canary)))
    listed = runner.invoke(app, ["adapters", "list", "--domain", domain])
    assert "canary 10%" in listed.output, listed.output
    asyncio.run(with_redis(os.environ["COWEST_REDIS_URL"], lambda r: set_canary(r, domain, None)))
    again = runner.invoke(app, ["adapters", "rollback", "--domain", domain])
    assert again.exit_code == 1 and "no adapter to roll back" in again.output
    assert "no adapter 'nope-v1'" in runner.invoke(app, ["adapters", "show", "nope-v1"]).output


def test_train_from_a_labelled_file(stack_env, monkeypatch, length_metric):
    domain = "clitrain"
    length_metric(domain)
    monkeypatch.setenv("COWEST_TRAINER_MIN_PAIRS_PER_ROUND", "1")
    result = runner.invoke(app, ["train", "--domain", domain, "--data", data_file(stack_env / "t.jsonl", 10)])
    assert result.exit_code == 0, result.output
    assert "pairs from 10 questions" in result.output and "round 1:" in result.output
    assert "failed" not in result.output and "skipped" not in result.output


def test_service_api(stack_env, tiny_weak_server, tiny_strong_server, private_redis, tiny_models):
    settings = trainer_settings(
        tiny_weak_server,
        tiny_strong_server,
        private_redis.url,
        base_model_dir=tiny_models["tiny-weak"],
        adapters_dir=stack_env / "adapters",
    )
    with serve_app(create_app(settings)) as url:
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        status = httpx.get(f"{url}/status", headers=ADMIN).json()
        assert "domains" in status and "running" in status
        assert httpx.get(f"{url}/adapters", headers=ADMIN).status_code == 200
        train = httpx.post(f"{url}/train", headers=ADMIN, json={"domain": "empty-domain"}, timeout=60).json()
        assert train["status"] == "skipped" and "0 pairs" in train["detail"]
        r = httpx.post(f"{url}/adapters/empty-domain/rollback", headers=ADMIN)
        assert r.status_code == 409 and "no adapter to roll back" in r.json()["detail"]
        assert httpx.post(f"{url}/train", headers=ADMIN, json={}).status_code == 422

        # The bulk protocol over a labelled set: held-out questions go to the gate, at most `limit` others
        # become pairs, and its report says the yield.
        domain = "bulk"
        with scored_by_length(domain):
            items = [{"question": f"Bulk question {i}?", "answer": f"answer {i}"} for i in range(12)]
            r = httpx.post(
                f"{url}/feedback/build",
                headers=ADMIN,
                json={"domain": domain, "items": items, "limit": 5},
                timeout=300,
            )
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["processed"] == 5 and out["heldout"] == sum(is_heldout(domain, i["question"]) for i in items)
            assert out["gate_items"] == out["heldout"]  # distinct questions here
            assert out["questions_with_pairs"] <= out["processed"] and sum(out["delta_histogram"].values()) == 5 * 4
            assert httpx.get(f"{url}/status", headers=ADMIN).json()["domains"][domain]["pending_pairs"] == out["pairs"]
            again = httpx.post(
                f"{url}/feedback/build",
                headers=ADMIN,
                json={"domain": domain, "items": items, "limit": 5},
                timeout=300,
            ).json()
            assert again["waiting"] == 5 and again["processed"] == 0  # the same questions wait: nothing is redone
        assert (
            httpx.post(f"{url}/feedback/build", headers=ADMIN, json={"domain": domain, "items": []}).status_code == 422
        )
