"""The serving objects behind the routes: wire models in, wire models out, over the pipeline.

`Serving.collaborate` answers POST /v1/collaborate; `Serving.chat` answers the OpenAI-compatible
POST /v1/chat/completions, where `model` picks the path: `cowest` or `cowest/<domain>` runs the collaboration,
a model the weak or strong server serves (base model or LoRA adapter) passes straight through to that server.
Streaming sends the strong refinement as chat.completion.chunk events ending with `data: [DONE]`. The weak
draft is produced before the first chunk; the first chunk carries it in the `cowest` extension field
({trace_id, mode, draft, degraded, weak}).

Request validation that needs the server's state (known domains, served adapters, token limits) lives here
and raises `APIError`; the pipeline below raises domain errors only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from services.orchestrator.config import OrchestratorSettings
from services.orchestrator.directory import ModelDirectory
from services.orchestrator.errors import APIError, error_body
from services.orchestrator.pipeline import (
    Collaborator,
    Degraded,
    Delta,
    Drafted,
    Finished,
    Interrupted,
    Question,
    RequestContext,
    Stage,
)
from services.orchestrator.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    ChunkChoice,
    CollaborateRequest,
    CollaborateResponse,
    DeltaMessage,
    Sampling,
    StageInfo,
)
from shared.adapters import BASE_ADAPTER, version_of
from shared.collaboration import CollaborationFailed
from shared.domains import DEFAULT_DOMAIN
from shared.upstream import UpstreamError

logger = logging.getLogger(__name__)
PIPELINE = "cowest"  # the model name of the collaboration; `cowest/<domain>` for a domain
PASS_HEADERS = ("content-type", "cache-control", "retry-after")


def pipeline_domain(model: str) -> str | None:
    if model == PIPELINE:
        return DEFAULT_DOMAIN
    if model.startswith(PIPELINE + "/"):
        return model.split("/", 1)[1]
    return None


def split_messages(messages: list[ChatMessage]) -> tuple[str, list[dict[str, str]]]:
    """(the question = last user message, the earlier turns as plain history)."""
    if messages[-1].role != "user" or not messages[-1].text().strip():
        raise APIError(400, "the last message must be a non-empty user message", param="messages")
    return messages[-1].text(), [{"role": m.role, "content": m.text()} for m in messages[:-1]]


def stage_info(stage: Stage) -> StageInfo:
    return StageInfo(
        model=stage.model,
        adapter=stage.adapter,
        adapter_version=version_of(stage.adapter),
        latency_ms=stage.latency_ms,
        usage=stage.usage,
    )


def _extension(ctx: RequestContext, drafted: Drafted) -> dict:
    return {
        "trace_id": ctx.trace_id,
        "mode": drafted.ask.mode,
        "mode_reason": drafted.ask.why,
        "draft": drafted.draft.text,
        "degraded": drafted.degraded,
        "weak": stage_info(drafted.draft).model_dump(),
    }


class Serving:
    def __init__(self, settings: OrchestratorSettings, collaborator: Collaborator, directory: ModelDirectory):
        self.settings, self.collaborator, self.directory = settings, collaborator, directory
        self.known_domains = collaborator.domains
        self.in_flight = 0  # collaborations being answered (streams until their last event)

    # --- backpressure -----------------------------------------------------------------------
    def _admit(self) -> None:
        if self.in_flight >= self.settings.max_in_flight:
            raise APIError(
                503,
                f"the orchestrator is answering {self.in_flight} requests, its limit; retry shortly",
                code="overloaded",
                headers={"Retry-After": "1"},
            )
        self.in_flight += 1

    def _deadline_error(self) -> APIError:
        limit = self.settings.request_deadline_s
        return APIError(504, f"no answer within the request deadline of {limit:g} s", code="deadline_exceeded")

    async def _within_deadline(self, work):
        try:
            async with asyncio.timeout(self.settings.request_deadline_s):
                return await work
        except TimeoutError:
            raise self._deadline_error() from None

    async def _bounded_stream(self, upstream, deadline: float) -> AsyncIterator[bytes]:
        """A pass-through stream's bytes until the request deadline, then an error event."""
        try:
            async with asyncio.timeout_at(deadline):
                async for chunk in upstream.aiter_raw():
                    yield chunk
        except TimeoutError:
            body = error_body(504, self._deadline_error().message, code="deadline_exceeded")
            yield f"\n\ndata: {json.dumps(body)}\n\n".encode()

    # --- checks -----------------------------------------------------------------------------
    def check_max_tokens(self, *stages: Sampling) -> None:
        limit = self.settings.max_tokens_limit
        for sampling in stages:
            if sampling.max_tokens is not None and sampling.max_tokens > limit:
                raise APIError(
                    422,
                    f"max_tokens {sampling.max_tokens} is above this server's limit of {limit}",
                    param="max_tokens",
                    code="max_tokens_too_large",
                )

    def check_domain(self, domain: str) -> None:
        if domain not in self.known_domains():
            raise APIError(
                404,
                f"unknown domain {domain!r}; known domains: {', '.join(self.known_domains())}",
                param="domain",
                code="domain_not_found",
            )

    async def check_adapter(self, adapter: str | None) -> None:
        """An adapter override must name an adapter the weak server serves (or `base`)."""
        if adapter is None or adapter == BASE_ADAPTER:
            return
        base = self.settings.endpoints.weak_model

        def served(cards: list[dict]) -> bool:
            return not cards or any(c.get("id") == adapter != base for c in cards)

        # A version loaded a moment ago may be missing from the cached list: re-read it before saying no.
        if not served(await self.directory.cards("weak")) and not served(await self.directory.cards("weak", True)):
            raise APIError(
                404, f"the weak server serves no adapter named {adapter!r}", param="adapter", code="adapter_not_found"
            )

    # --- POST /v1/collaborate ---------------------------------------------------------------
    async def collaborate(self, body: CollaborateRequest, ctx: RequestContext) -> CollaborateResponse:
        domain = body.domain or DEFAULT_DOMAIN
        self.check_domain(domain)
        self.check_max_tokens(body.weak, body.strong)
        await self.check_adapter(body.adapter)
        question, history = split_messages(body.messages) if body.messages else (body.question or "", [])
        q = Question(
            question=question,
            domain=domain,
            draft_format=body.draft_format,
            context=body.context,
            history=history,
            weak=body.weak.params(),
            strong=body.strong.params(),
            metadata=body.metadata,
            adapter=body.adapter,
            mode=body.mode,
            draft=body.draft,
            user=body.user,
            lookup=body.lookup,
        )
        self._admit()
        try:
            outcome = await self._within_deadline(self.collaborator.run(q, ctx))
        finally:
            self.in_flight -= 1
        return CollaborateResponse(
            id=ctx.trace_id,
            domain=domain,
            mode=outcome.ask.mode,
            mode_reason=outcome.ask.why,
            answer=outcome.answer,
            draft=outcome.draft.text if body.return_draft else None,
            weak=stage_info(outcome.draft),
            strong=stage_info(outcome.strong),
            degraded=outcome.degraded,
            latency_ms=outcome.latency_ms,
            facts=outcome.ask.facts.facts if outcome.ask.facts else None,
            facts_missing=outcome.ask.facts.missing if outcome.ask.facts else None,
        )

    # --- POST /v1/chat/completions ----------------------------------------------------------
    async def chat(self, body: ChatCompletionRequest, ctx: RequestContext, request: Request):
        """A ChatCompletionResponse, an async iterator of SSE events (stream), or the pass-through's response."""
        self.check_max_tokens(body.sampling())
        deadline = asyncio.get_running_loop().time() + self.settings.request_deadline_s  # the whole request's
        domain = pipeline_domain(body.model)
        if domain is None:
            return await self._pass_through(body, ctx, request, deadline)
        self.check_domain(domain)
        if body.n != 1:
            raise APIError(400, "the cowest pipeline returns one choice: n must be 1", param="n")
        question, history = split_messages(body.messages)
        q = Question(
            question=question,
            domain=domain,
            draft_format=body.draft_format,
            context=body.context,
            history=history,
            strong=body.sampling().params(),
            metadata=body.metadata or {},
            user=body.user,
        )
        chat_id = f"chatcmpl-{ctx.trace_id.removeprefix('tr-')}"
        self._admit()
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            ctx = dataclasses.replace(ctx, stream=True)
            try:
                drafted = await self._within_deadline(self.collaborator.draft(q, ctx))
            except BaseException:
                self.in_flight -= 1
                raise
            # releases the slot at its end
            return self._releasing(self._chunk_events(q, ctx, drafted, body.model, chat_id, include_usage, deadline))
        try:
            outcome = await self._within_deadline(self.collaborator.run(q, ctx))
        finally:
            self.in_flight -= 1
        drafted = Drafted(outcome.ask, outcome.draft)
        return ChatCompletionResponse(
            id=chat_id,
            model=body.model,
            choices=[ChatChoice(message=AssistantMessage(content=outcome.answer))],
            usage=outcome.usage,
            cowest=_extension(ctx, drafted)
            | {"degraded": outcome.degraded, "strong": stage_info(outcome.strong).model_dump()},
        )

    async def _releasing(self, events: AsyncIterator) -> AsyncIterator:
        """`events`, then the request's in-flight slot is released: when the stream ends, however it ends."""
        try:
            async for e in events:
                yield e
        finally:
            self.in_flight -= 1

    async def _chunk_events(
        self,
        q: Question,
        ctx: RequestContext,
        drafted: Drafted,
        model: str,
        chat_id: str,
        include_usage: bool,
        deadline: float,
    ) -> AsyncIterator[dict]:
        created = int(time.time())

        def event(choices: list[ChunkChoice], **extra) -> dict:
            chunk = ChatCompletionChunk(id=chat_id, created=created, model=model, choices=choices, **extra)
            return {"data": chunk.model_dump_json()}

        def error(status: int, message: str, code: str) -> dict:
            return {"data": json.dumps(error_body(status, message, code=code))}

        yield event([ChunkChoice(delta=DeltaMessage(role="assistant", content=""))], cowest=_extension(ctx, drafted))
        usage = None
        # aclosing: when the client disconnects, the pipeline's generator still closes and logs the trace.
        async with contextlib.aclosing(self.collaborator.stream(q, ctx, drafted)) as events:
            try:
                # The request deadline bounds the stream too: a strong model dripping a token every 0.3 s never
                # trips a read timeout.
                async with asyncio.timeout_at(deadline):
                    async for e in events:
                        match e:
                            case Delta(text):
                                yield event([ChunkChoice(delta=DeltaMessage(content=text))])
                            case Degraded(reason):
                                yield event([ChunkChoice()], cowest={"degraded": reason})
                            case Finished(total):
                                usage = total
                            case Interrupted(message, code):
                                yield error(502, message, code)
                                return
            except TimeoutError:
                yield error(504, self._deadline_error().message, "deadline_exceeded")
                return
            except CollaborationFailed as exc:  # nothing left to answer with (both servers down)
                yield error(503, str(exc), exc.code)
                return
            except Exception:  # the response has started: a 500 can only be said as an event
                logger.exception("stream %s failed", ctx.trace_id)
                yield error(500, "internal error; see the orchestrator log", "internal_error")
                return
        yield event([ChunkChoice(finish_reason="stop")])
        if include_usage and usage is not None:
            yield event([], usage=usage)
        yield {"data": "[DONE]"}

    async def _pass_through(self, body: ChatCompletionRequest, ctx: RequestContext, request: Request, deadline: float):
        role = await self.directory.served_by(body.model)
        if role is None:
            known = [PIPELINE, *(f"{PIPELINE}/{d}" for d in self.known_domains())]
            for r in ("weak", "strong"):
                known += [c["id"] for c in await self.directory.cards(r)]
            raise APIError(
                404,
                f"model {body.model!r} does not exist; available: {', '.join(dict.fromkeys(known))}",
                param="model",
                code="model_not_found",
            )
        headers = {"content-type": "application/json", **{k.lower(): v for k, v in ctx.headers().items()}}
        self._admit()  # pass-through requests hold a slot too, until their last byte
        try:
            async with asyncio.timeout_at(deadline):
                upstream = await self.directory.upstreams[role].proxy(
                    "POST", "/chat/completions", await request.body(), headers
                )
        except BaseException as exc:
            self.in_flight -= 1
            if isinstance(exc, TimeoutError):
                raise self._deadline_error() from None
            if isinstance(exc, UpstreamError):
                raise APIError(
                    503,
                    f"the {role} model server is unavailable ({exc.public})",
                    code=f"{role}_unavailable",
                    headers={"Retry-After": "5"},
                ) from exc
            raise
        self.collaborator.metrics.requests.labels(f"pass_{role}", "-", str(upstream.status_code)).inc()
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() in PASS_HEADERS}
        if "text/event-stream" in upstream.headers.get("content-type", ""):
            return StreamingResponse(  # the stream releases the slot at its end
                self._releasing(self._bounded_stream(upstream, deadline)),
                status_code=upstream.status_code,
                headers=out_headers,
                background=BackgroundTask(upstream.aclose),
            )
        try:
            async with asyncio.timeout_at(deadline):
                content = await upstream.aread()
        except TimeoutError:
            raise self._deadline_error() from None
        finally:
            await upstream.aclose()
            self.in_flight -= 1
        try:
            return JSONResponse(json.loads(content), status_code=upstream.status_code, headers=out_headers)
        except ValueError:
            raise APIError(502, f"the {role} model server sent a malformed response", code="bad_upstream") from None
