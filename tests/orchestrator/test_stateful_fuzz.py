"""Stateful fuzz of the orchestrator (hypothesis): random sequences of collaborations, chat completions (streamed
or not) and feedback on the ids they returned, with hostile values mixed in (lone surrogates, deep nesting, huge
lists, extreme and non-finite floats). After every step: no 5xx, errors in the OpenAI shape, every stream ends
in `[DONE]` or an error event; after every sequence: exactly one trace in Redis per answered request, and one
feedback record per accepted feedback."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from services.orchestrator.app import create_app
from shared.redis_keys import FEEDBACK_STREAM, TRACES_STREAM
from tests.support.fake_upstream import fake_upstream
from tests.support.servers import serve_app
from tests.support.settings import orch_settings

pytestmark = pytest.mark.slow

# Raw JSON fragments a client can send that Python's json.dumps would never produce.
HOSTILE_TEXT = ['"\\ud800"', '"a\\udfffb"', '"\\u0000"', json.dumps("x" * 5000), '"\\"; DROP TABLE"']
HOSTILE_FLOAT = ["NaN", "Infinity", "-Infinity", "1e308", "1e309", "-0.0", "0.5", "1", "2"]


def nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


text = st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=40).map(json.dumps))
metadata = st.one_of(
    st.just("{}"),
    st.integers(1, 40).map(nested),
    st.integers(0, 3000).map(lambda n: json.dumps({"xs": list(range(n))})),
)
step = st.one_of(
    st.tuples(st.just("collaborate"), text, metadata),
    st.tuples(st.just("chat"), text, st.booleans()),
    st.tuples(st.just("feedback"), st.integers(0, 5), st.sampled_from(HOSTILE_FLOAT)),
)


@pytest.fixture(scope="module")
def stack(private_redis, tmp_path_factory) -> Iterator[tuple[str, object]]:
    with (
        fake_upstream("tiny-weak", ["ok"], text="a draft") as (weak, _),
        fake_upstream("tiny-strong", ["ok"], text="an answer") as (strong, _),
    ):
        spool = tmp_path_factory.mktemp("stateful") / "spool.jsonl"
        with serve_app(create_app(orch_settings(weak, strong, private_redis.url, spool))) as url:
            yield url, private_redis.client()


def check_error_shape(r: httpx.Response) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        error = r.json()["error"]
        assert isinstance(error["message"], str) and error["type"], r.text[:300]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, min_size=1, max_size=6))
def test_random_sequences_never_5xx_and_log_each_answer_once(stack, steps):
    url, redis = stack
    answered: list[str] = []  # trace ids of answered requests
    accepted: list[str] = []  # feedback ids accepted
    with httpx.Client(base_url=url, timeout=30, headers={"content-type": "application/json"}) as client:
        for kind, a, b in steps:
            if kind == "collaborate":
                r = client.post("/v1/collaborate", content=f'{{"question": {a}, "metadata": {b}}}')
                check_error_shape(r)
                if r.status_code == 200:
                    answered.append(r.json()["id"])
            elif kind == "chat":
                message = f'{{"role": "user", "content": {a}}}'
                body = f'{{"model": "cowest", "stream": {json.dumps(b)}, "messages": [{message}]}}'
                with client.stream("POST", "/v1/chat/completions", content=body) as r:
                    if r.status_code != 200:
                        r.read()
                        check_error_shape(r)
                        continue
                    trace = r.headers["x-cowest-trace-id"]
                    if b:
                        events = [line for line in r.iter_lines() if line.startswith("data: ")]
                        assert events and (events[-1] == "data: [DONE]" or '"error"' in events[-1]), events[-3:]
                    else:
                        r.read()
                    answered.append(trace)
            else:
                target = answered[a % len(answered)] if answered else "tr-does-not-exist"
                r = client.post("/v1/feedback", content=f'{{"id": "{target}", "score": {b}, "source": "fuzz{a}"}}')
                check_error_shape(r)
                if r.status_code == 202:
                    accepted.append(r.json()["id"])
    event(f"answered requests: {min(len(answered), 3)}+, accepted feedback: {min(len(accepted), 2)}+")
    traces = [f["id"] for _, f in redis.xrange(TRACES_STREAM, count=10**6)]
    for trace_id in answered:
        assert traces.count(trace_id) == 1, (trace_id, traces.count(trace_id))
    feedback = [f["id"] for _, f in redis.xrange(FEEDBACK_STREAM, count=10**6)]
    for feedback_id in accepted:
        assert feedback.count(feedback_id) == 1, feedback_id
