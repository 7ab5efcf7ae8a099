"""The official openai client against the orchestrator, with the tiny models on real vLLM."""

from __future__ import annotations

import httpx
import openai
import pytest

from services.orchestrator.app import create_app
from tests.support.servers import ADAPTERS, serve_app
from tests.support.settings import orch_settings

pytestmark = pytest.mark.slow
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def client(url: str, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, timeout=60, **kw)


def stream_trace(redis_client, trace_id: str) -> dict:
    import json

    for _, fields in redis_client.xrange("cowest:traces"):
        if fields["id"] == trace_id:
            return json.loads(fields["data"])
    raise AssertionError(f"trace {trace_id} not in the stream")


def test_models_list_shows_pipelines_models_and_adapters(orchestrator):
    cards = {m.id: m for m in client(orchestrator).models.list().data}
    assert cards["cowest"].model_extra["kind"] == "pipeline"
    assert cards["cowest/general"].model_extra["domain"] == "general"
    assert cards["tiny-weak"].model_extra["kind"] == "weak"
    assert cards["tiny-strong"].model_extra["kind"] == "strong"
    for name in ADAPTERS:
        assert cards[name].model_extra["kind"] == "adapter" and cards[name].model_extra["parent"] == "tiny-weak"


def test_chat_completion_runs_the_collaboration(orchestrator, private_redis):
    raw = client(orchestrator).chat.completions.with_raw_response.create(
        model="cowest", messages=MESSAGES, max_tokens=6
    )
    reply = raw.parse()
    ext = reply.model_extra["cowest"]
    assert raw.headers["x-cowest-trace-id"] == ext["trace_id"] and raw.headers["x-request-id"]
    assert reply.choices[0].message.content and ext["draft"] and ext["degraded"] is None
    # usage counts both stages: the draft and the answer
    assert reply.usage.total_tokens == ext["weak"]["usage"]["total_tokens"] + ext["strong"]["usage"]["total_tokens"]
    assert ext["strong"]["usage"]["completion_tokens"] <= 6
    trace = stream_trace(private_redis.client(), ext["trace_id"])
    assert trace["answer"] == reply.choices[0].message.content and trace["draft"] == ext["draft"]
    assert trace["api"] == "chat" and trace["question"] == MESSAGES[0]["content"]


def test_streaming_chat_sends_draft_first_then_refinement(orchestrator, private_redis):
    stream = client(orchestrator).chat.completions.create(
        model="cowest", messages=MESSAGES, max_tokens=6, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    first = chunks[0]
    assert first.choices[0].delta.role == "assistant"
    draft_info = first.model_extra["cowest"]
    assert draft_info["draft"] and draft_info["trace_id"].startswith("tr-")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0  # include_usage honoured
    assert stream_trace(private_redis.client(), draft_info["trace_id"])["answer"] == text


def test_stream_ends_with_done(orchestrator):
    with httpx.stream(
        "POST",
        f"{orchestrator}/v1/chat/completions",
        timeout=60,
        json={"model": "cowest", "messages": MESSAGES, "max_tokens": 4, "stream": True},
    ) as r:
        lines = [ln for ln in r.iter_lines() if ln.startswith("data:")]
    assert r.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]"


@pytest.mark.parametrize("model", ["tiny-weak", "adapter-a", "tiny-strong"])
def test_model_names_pass_through_to_their_server(orchestrator, tiny_weak_server, tiny_strong_server, model):
    params = dict(model=model, messages=MESSAGES, max_tokens=6, temperature=0)
    via = client(orchestrator).chat.completions.create(**params)
    direct_url = tiny_strong_server if model == "tiny-strong" else tiny_weak_server
    direct = client(direct_url).chat.completions.create(**params)
    assert via.choices[0].message.content == direct.choices[0].message.content
    assert via.model == model
    streamed = client(orchestrator).chat.completions.create(**params, stream=True)
    assert (
        "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == direct.choices[0].message.content
    )


def test_errors_are_openai_errors(orchestrator):
    c = client(orchestrator)
    with pytest.raises(openai.NotFoundError) as err:
        c.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert err.value.body["code"] == "model_not_found" and "cowest" in err.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="cowest/no-such-domain", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model="cowest", messages=[])
    assert err.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="cowest", messages=MESSAGES, temperature="hot")
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="cowest", messages=[{"role": "assistant", "content": "hi"}])
    with pytest.raises(openai.UnprocessableEntityError) as err:
        c.chat.completions.create(model="cowest", messages=MESSAGES, max_tokens=10**6)
    assert err.value.body["param"] == "max_tokens"


def test_api_keys_are_enforced(tiny_weak_server, tiny_strong_server, private_redis, tmp_path):
    settings = orch_settings(
        tiny_weak_server, tiny_strong_server, private_redis.url, tmp_path / "s.jsonl", api_keys=["k-123", "k-456"]
    )
    with serve_app(create_app(settings)) as url:
        with pytest.raises(openai.AuthenticationError) as err:
            client(url, api_key="wrong").models.list()
        assert err.value.body["code"] == "invalid_api_key"
        assert client(url, api_key="k-456").models.list().data
        assert httpx.get(f"{url}/healthz").status_code == 200  # probes need no key
        assert httpx.post(f"{url}/v1/collaborate", json={"question": "q"}).status_code == 401
