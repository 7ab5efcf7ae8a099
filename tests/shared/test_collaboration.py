"""One collaboration path: serving (/v1/collaborate), the evaluation harness and the trainer's gate and
collaborative feedback send byte-identical model requests for the same question, adapter and sampling.
The model servers are recording fakes (only the requests are compared); everything else is real: the
orchestrator over HTTP with Redis, the harness, the trainer's client."""

from __future__ import annotations

import json

import httpx

from evaluation.harness import EvalRun, evaluate
from services.orchestrator.app import create_app
from services.trainer.collab import CollabClient
from shared import redis_keys
from shared.data.example import Example
from shared.knowledge import Knowledge, KnowledgeCache, publish
from tests.support.fake_upstream import fake_upstream
from tests.support.servers import serve_app
from tests.support.settings import orch_settings, trainer_settings

QUESTION, DOMAIN, ADAPTER = "At Acme: what do 3 units of the Falcon cost?", "synthetic", "synthetic-v1"
FACT = "The Falcon valve costs 149 euros and weighs 3 kg."


def last(fake) -> dict:
    return fake.calls[-1]["body"]


async def test_serving_evaluation_and_trainer_send_identical_requests(private_redis, tmp_path):  # noqa: F811
    with (
        fake_upstream("weak-m", ["ok"], "Falcon: 149 euros. Answer: 447 euros", (ADAPTER,)) as (weak_url, weak),
        fake_upstream("strong-m", ["ok"], "Work: 3 x 149. Answer: 447 euros") as (strong_url, strong),
    ):
        # Serving and training share one set of limits: the settings' defaults, not the test helper's.
        orch = orch_settings(
            weak_url,
            strong_url,
            private_redis.url,
            tmp_path / "spool.jsonl",
            weak_model="weak-m",
            strong_model="strong-m",
            weak_max_tokens=256,
            strong_max_tokens=512,
        )
        redis = redis_keys.connect(private_redis.url)
        # The adapter version's knowledge, as the trainer publishes it before the version serves: every path's
        # draft request must carry the same lookup.
        await publish(redis, ADAPTER, Knowledge((FACT, "The Kestrel pump costs 80 euros.")), domain=DOMAIN)
        trainer = CollabClient(
            trainer_settings(weak_url, strong_url, private_redis.url, weak_model="weak-m", strong_model="strong-m"),
            KnowledgeCache(redis),
        )
        example = Example(
            id="1",
            domain=DOMAIN,
            question=QUESTION,
            answer="447 euros",
            rationale="The Falcon costs 149 euros; 3 x 149 = 447 euros.",
        )
        try:
            with serve_app(create_app(orch)) as url:
                greedy = {"temperature": 0}
                r = httpx.post(
                    f"{url}/v1/collaborate",
                    json={
                        "question": QUESTION,
                        "domain": DOMAIN,
                        "adapter": ADAPTER,
                        "weak": greedy,
                        "strong": greedy,
                    },
                )
                assert r.status_code == 200, r.text
                serving = (last(weak), last(strong))
                harness = {}
                for mode in ("collab", "weak", "strong"):
                    await evaluate(url, EvalRun(DOMAIN, mode, adapter=ADAPTER), [example], tmp_path / "eval")
                    harness[mode] = (last(weak), last(strong))
                # The oracle: the gold rationale is the draft; the weak model is not asked.
                weak_calls = len(weak.calls)
                await evaluate(url, EvalRun(DOMAIN, "oracle"), [example], tmp_path / "eval")
                assert len(weak.calls) == weak_calls and example.rationale in last(strong)["messages"][-1]["content"]
                oracle = json.loads((tmp_path / "eval" / DOMAIN / "oracle.jsonl").read_text().splitlines()[-1])
                assert oracle["draft_correct"] and oracle["correct"]  # the gold draft scores as right
                # Strong + retrieval: the strong model alone, given the facts the draft stage would get.
                await evaluate(url, EvalRun(DOMAIN, "strong", lookup=True), [example], tmp_path / "eval")
                retrieval = last(strong)
                bad = httpx.post(f"{url}/v1/collaborate", json={"question": QUESTION, "mode": "weak", "draft": "x"})
                assert bad.status_code == 422 and "mode `collab`" in bad.json()["error"]["message"]
            await trainer.collaborate(QUESTION, DOMAIN, ADAPTER, "447 euros")  # the gate's path
            gate = (last(weak), last(strong))
            await trainer.refine(QUESTION, DOMAIN, None)  # collaborative feedback's baseline: strong alone
            strong_alone = last(strong)
            feedback_drafts, feedback_prompt = await trainer.drafts(
                QUESTION, DOMAIN, ADAPTER, n=4, temperature=0.8, seed=1
            )
        finally:
            await trainer.aclose()
            await redis.delete(redis_keys.knowledge(ADAPTER), redis_keys.domain_knowledge(DOMAIN))
            await redis.aclose()

    assert serving == harness["collab"] == gate
    assert f"- {FACT}" in serving[0]["messages"][-1]["content"]  # the lookup, in the weak prompt only
    assert FACT not in serving[1]["messages"][-1]["content"].split("drafted")[0]
    assert feedback_prompt == serving[0]["messages"]  # DPO pairs are trained on the served prompt
    assert (
        f"- {FACT}" in retrieval["messages"][-1]["content"] and "drafted" not in retrieval["messages"][-1]["content"]
    )
    assert serving[0]["model"] == ADAPTER and serving[0]["max_tokens"] == 256 and serving[1]["max_tokens"] == 512
    assert "447 euros" in serving[1]["messages"][-1]["content"]  # the strong model saw the draft
    assert harness["weak"][0] == serving[0]  # weak alone: the same draft request
    assert harness["strong"][1] == strong_alone  # strong alone: feedback's baseline request
    assert (
        QUESTION in strong_alone["messages"][-1]["content"]
        and "drafted" not in strong_alone["messages"][-1]["content"]
    )
    # K feedback drafts: the serving draft request, sampled, n=K in one request.
    sampled = last(weak)
    assert {k: v for k, v in sampled.items() if k not in ("n", "temperature", "seed")} == {
        k: v for k, v in serving[0].items() if k != "temperature"
    }
    assert (sampled["n"], sampled["temperature"], sampled["seed"]) == (4, 0.8, 1) and len(feedback_drafts) == 1
