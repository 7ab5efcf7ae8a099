"""POST /v1/chat/completions, OpenAI-compatible.

`model` picks the route: `cowest` or `cowest/<domain>` runs the collaboration; a model the weak or
strong server serves (base model or LoRA adapter) passes straight through to that server.
Streaming sends the strong refinement as chat.completion.chunk events ending with `data: [DONE]`.
The weak draft is produced before the first chunk; the first chunk carries it in the `cowest`
extension field ({trace_id, draft, degraded, weak}), and X-Cowest-Trace-Id is a response header.
"""

from __future__ import annotations

import contextlib
import json
import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from sse_starlette.sse import EventSourceResponse
from starlette.background import BackgroundTask

from services.orchestrator.deps import AppState, get_state, require_api_key
from services.orchestrator.errors import APIError, error_body
from services.orchestrator.pipeline import Question, Stage, sum_usage
from services.orchestrator.protocol import ChatCompletionRequest
from services.orchestrator.routes.common import (
    check_domain,
    check_max_tokens,
    make_question,
    split_messages,
    stage_info,
)
from shared.prompts import DEFAULT_DOMAIN
from shared.upstream import UpstreamError

router = APIRouter(dependencies=[Depends(require_api_key)])
PIPELINE = "cowest"
PASS_HEADERS = ("content-type", "cache-control", "retry-after")


def pipeline_domain(model: str) -> str | None:
    if model == PIPELINE:
        return DEFAULT_DOMAIN
    if model.startswith(PIPELINE + "/"):
        return model.split("/", 1)[1]
    return None


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request, state: AppState = Depends(get_state)):
    check_max_tokens(state, body.sampling())
    domain = pipeline_domain(body.model)
    if domain is None:
        return await _pass_through(body, request, state)
    check_domain(state, domain)
    if body.n != 1:
        raise APIError(400, "the cowest pipeline returns one choice: n must be 1", param="n")
    question, history = split_messages(body.messages)
    q = make_question(
        request,
        question=question,
        domain=domain,
        history=history,
        context=body.context,
        draft_format=body.draft_format,
        strong=body.sampling(),
        metadata=body.metadata,
        api="chat",
    )
    chat_id = f"chatcmpl-{q.trace_id.removeprefix('tr-')}"
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        draft = await state.collaborator.draft(q)
        state.metrics.requests.labels("chat_stream", domain, "200").inc()
        return EventSourceResponse(
            _events(state, q, draft, body.model, chat_id, include_usage), ping=15, headers={"X-Accel-Buffering": "no"}
        )
    outcome = await state.collaborator.run(q)
    state.metrics.requests.labels("chat", domain, "200").inc()
    usage = sum_usage(outcome.draft.usage, outcome.strong.usage)
    return {
        "id": chat_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.model,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "logprobs": None,
                "message": {"role": "assistant", "content": outcome.answer},
            }
        ],
        "usage": usage.model_dump(),
        "cowest": _extension(q, outcome.draft, outcome.degraded) | {"strong": stage_info(outcome.strong).model_dump()},
    }


def _extension(q: Question, draft: Stage, degraded: str | None) -> dict:
    return {
        "trace_id": q.trace_id,
        "mode": q.mode,
        "draft": draft.text,
        "degraded": degraded,
        "weak": stage_info(draft).model_dump(),
    }


async def _events(state: AppState, q: Question, draft: Stage, model: str, chat_id: str, include_usage: bool):
    created = int(time.time())

    def chunk(delta: dict, finish: str | None = None, **extra) -> dict:
        payload = {
            "id": chat_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            **extra,
        }
        return {"data": json.dumps(payload)}

    degraded = None if draft.error is None else f"weak_unavailable: {draft.error}"
    yield chunk({"role": "assistant", "content": ""}, cowest=_extension(q, draft, degraded))
    usage, failed = None, False
    # aclosing: when the client disconnects, the pipeline's generator still closes and logs the trace.
    async with contextlib.aclosing(state.collaborator.stream(q, draft, include_usage)) as events:
        try:
            async for event in events:
                if "content" in event:
                    yield chunk({"content": event["content"]})
                elif "degraded" in event:
                    yield chunk({}, cowest={"degraded": event["degraded"]})
                elif "usage" in event:
                    usage = event["usage"]
                elif "error" in event:
                    failed = True
                    err: APIError = event["error"]
                    yield {"data": json.dumps(error_body(err.status_code, err.message, code=err.code))}
        except APIError as err:  # nothing left to answer with (both servers down)
            failed = True
            yield {"data": json.dumps(error_body(err.status_code, err.message, code=err.code))}
    if failed:
        return
    yield chunk({}, "stop")
    if usage is not None:
        yield {
            "data": json.dumps(
                {
                    "id": chat_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage.model_dump(),
                }
            )
        }
    yield {"data": "[DONE]"}


async def _pass_through(body: ChatCompletionRequest, request: Request, state: AppState):
    role = await state.directory.served_by(body.model)
    if role is None:
        known = [PIPELINE, *(f"{PIPELINE}/{d}" for d in state.known_domains())]
        for r in ("weak", "strong"):
            known += [c["id"] for c in await state.directory.cards(r)]
        raise APIError(
            404,
            f"model {body.model!r} does not exist; available: {', '.join(dict.fromkeys(known))}",
            param="model",
            code="model_not_found",
        )
    headers = {
        "content-type": "application/json",
        "x-request-id": request.state.request_id,
        "traceparent": request.state.traceparent,
    }
    try:
        upstream = await state.directory.upstreams[role].proxy(
            "POST", "/chat/completions", await request.body(), headers
        )
    except UpstreamError as exc:
        raise APIError(
            503,
            f"the {role} model server is unavailable: {exc}",
            code=f"{role}_unavailable",
            headers={"Retry-After": "5"},
        ) from exc
    state.metrics.requests.labels(f"pass_{role}", "-", str(upstream.status_code)).inc()
    out_headers = {k: v for k, v in upstream.headers.items() if k.lower() in PASS_HEADERS}
    if "text/event-stream" in upstream.headers.get("content-type", ""):
        return StreamingResponse(
            upstream.aiter_raw(),
            status_code=upstream.status_code,
            headers=out_headers,
            background=BackgroundTask(upstream.aclose),
        )
    content = await upstream.aread()
    await upstream.aclose()
    try:
        return JSONResponse(json.loads(content), status_code=upstream.status_code, headers=out_headers)
    except ValueError:
        raise APIError(502, f"the {role} model server sent a malformed response", code="bad_upstream") from None
