"""CoWest inference, y* = strong(x, weak(x)): the weak draft, then the strong refinement.

Degraded modes, each flagged in the answer, the trace and the metrics:
- weak server down or failing  -> the strong model answers alone (`weak_unavailable`)
- strong endpoint failing after retries -> the weak draft is the answer (`strong_unavailable`),
  unless COWEST_ORCH_STRONG_FALLBACK=error, which answers 503
- both failing -> 503 with both reasons
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from services.orchestrator.adapters import AdapterAliases
from services.orchestrator.config import OrchestratorSettings
from services.orchestrator.errors import APIError
from services.orchestrator.metrics import Metrics
from services.orchestrator.protocol import Sampling
from services.orchestrator.tracelog import TraceLog
from services.orchestrator.upstream import Upstream, UpstreamError
from shared.prompts import DraftFormat, strong_alone_messages, strong_messages, weak_messages
from shared.schemas import TraceRecord, Usage


BASE_MODEL = "base"  # the `adapter` override that means no adapter


def new_trace_id() -> str:
    return f"tr-{uuid.uuid4().hex}"


@dataclass
class Question:
    question: str
    domain: str
    draft_format: DraftFormat = DraftFormat.cot
    context: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)
    weak: Sampling = field(default_factory=Sampling)
    strong: Sampling = field(default_factory=Sampling)
    metadata: dict[str, Any] = field(default_factory=dict)
    adapter: str | None = None  # override of the domain's active adapter; BASE_MODEL for none
    request_id: str | None = None
    traceparent: str | None = None
    api: str = "collaborate"
    trace_id: str = field(default_factory=new_trace_id)
    started: float = field(default_factory=time.perf_counter)

    def headers(self) -> dict[str, str]:
        return {k: v for k, v in (("X-Request-Id", self.request_id), ("traceparent", self.traceparent)) if v}


@dataclass
class Stage:
    model: str | None = None
    adapter: str | None = None
    text: str | None = None
    latency_ms: float | None = None
    usage: Usage | None = None
    error: str | None = None


@dataclass
class Outcome:
    question: Question
    draft: Stage
    strong: Stage
    answer: str
    degraded: str | None
    latency_ms: float


def _usage(body: dict) -> Usage | None:
    return Usage(**body["usage"]) if body.get("usage") else None


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 1)


class Collaborator:
    def __init__(self, settings: OrchestratorSettings, weak: Upstream, strong: Upstream,
                 aliases: AdapterAliases, log: TraceLog, metrics: Metrics):
        self.settings, self.weak, self.strong = settings, weak, strong
        self.aliases, self.log, self.metrics = aliases, log, metrics

    # --- stages ---------------------------------------------------------------------------
    async def draft(self, q: Question) -> Stage:
        """The weak model's draft under the domain's active adapter; never raises."""
        adapter = self.aliases.get(q.domain) if q.adapter is None else (None if q.adapter == BASE_MODEL else q.adapter)
        stage = Stage(model=self.settings.weak_model, adapter=adapter)
        payload = {"model": adapter or self.settings.weak_model, "max_tokens": self.settings.weak_max_tokens,
                   "messages": weak_messages(q.question, q.domain, q.context, q.draft_format, q.history),
                   **q.weak.params()}
        t0 = time.perf_counter()
        try:
            body = await self.weak.chat(payload, q.headers())
            stage.text = body["choices"][0]["message"]["content"] or ""
            stage.usage = _usage(body)
        except (UpstreamError, KeyError, IndexError, TypeError) as exc:
            stage.error = str(exc)
        stage.latency_ms = _ms(t0)
        self.metrics.stage_latency.labels("weak", q.domain).observe(stage.latency_ms / 1000)
        return stage

    def strong_payload(self, q: Question, draft: Stage) -> dict:
        if draft.text:
            messages = strong_messages(q.question, draft.text, q.domain, q.context, q.draft_format, q.history)
        else:
            messages = strong_alone_messages(q.question, q.domain, q.context, q.history)
        return {"model": self.settings.strong_model, "max_tokens": self.settings.strong_max_tokens,
                "messages": messages, **q.strong.params()}

    def fallback(self, q: Question, draft: Stage, error: str) -> tuple[str, str]:
        """(answer, degraded reason) when the strong stage failed; raises 503 when nothing is left."""
        if draft.text and self.settings.strong_fallback == "draft":
            return draft.text, f"strong_unavailable: {error}"
        if draft.text:
            raise APIError(503, f"the strong model failed: {error}", code="strong_unavailable",
                           headers={"Retry-After": "5"})
        raise APIError(503, f"both model servers are unavailable. weak: {draft.error}; strong: {error}",
                       code="models_unavailable", headers={"Retry-After": "5"})

    # --- whole requests -------------------------------------------------------------------
    async def run(self, q: Question) -> Outcome:
        draft = await self.draft(q)
        strong = Stage(model=self.settings.strong_model)
        t0 = time.perf_counter()
        degraded = None if draft.text is not None else f"weak_unavailable: {draft.error}"
        try:
            body = await self.strong.chat(self.strong_payload(q, draft), q.headers())
            strong.text = body["choices"][0]["message"]["content"] or ""
            strong.usage = _usage(body)
            answer = strong.text
        except (UpstreamError, KeyError, IndexError, TypeError) as exc:
            strong.error = str(exc)
            answer, degraded = self.fallback(q, draft, strong.error)
        finally:
            strong.latency_ms = _ms(t0)
            self.metrics.stage_latency.labels("strong", q.domain).observe(strong.latency_ms / 1000)
        outcome = Outcome(q, draft, strong, answer, degraded, _ms(q.started))
        await self.record(outcome)
        return outcome

    async def stream(self, q: Question, draft: Stage, include_usage: bool) -> AsyncIterator[dict]:
        """The strong refinement as OpenAI stream deltas ({"content"} / {"usage"} / {"degraded"});
        records the trace when the stream ends, however it ends."""
        strong = Stage(model=self.settings.strong_model)
        parts: list[str] = []
        degraded = None if draft.text is not None else f"weak_unavailable: {draft.error}"
        t0 = time.perf_counter()
        payload = self.strong_payload(q, draft)
        payload["stream_options"] = {"include_usage": True}
        try:
            try:
                async for chunk in self.strong.stream_chat(payload, q.headers()):
                    if chunk.get("usage"):
                        strong.usage = Usage(**chunk["usage"])
                    for choice in chunk.get("choices") or []:
                        if text := (choice.get("delta") or {}).get("content"):
                            parts.append(text)
                            yield {"content": text}
            except UpstreamError as exc:
                strong.error = str(exc)
                if parts:  # tokens already went out: no clean fallback, report the error in-stream
                    degraded = f"strong_interrupted: {exc}"
                    yield {"error": APIError(502, f"the strong model failed mid-stream: {exc}", code="strong_interrupted")}
                    return
                answer, degraded = self.fallback(q, draft, strong.error)
                parts.append(answer)
                yield {"degraded": degraded}
                yield {"content": answer}
            if include_usage:
                yield {"usage": sum_usage(draft.usage, strong.usage)}
        finally:
            strong.text = "".join(parts) if strong.error is None else None
            strong.latency_ms = _ms(t0)
            outcome = Outcome(q, draft, strong, "".join(parts), degraded, _ms(q.started))
            # Shielded: a client that disconnects must not cancel the log write.
            await asyncio.shield(self.record(outcome))

    async def record(self, o: Outcome) -> None:
        q = o.question
        self.metrics.stage_latency.labels("total", q.domain).observe(o.latency_ms / 1000)
        if o.degraded:
            self.metrics.degraded.labels(q.domain, o.degraded.split(":")[0]).inc()
        await self.log.log_trace(TraceRecord(
            trace_id=q.trace_id, domain=q.domain, draft_format=q.draft_format.value, question=q.question,
            context=q.context, history=q.history, draft=o.draft.text, answer=o.answer,
            weak_model=o.draft.model, weak_adapter=o.draft.adapter, strong_model=o.strong.model,
            weak_latency_ms=o.draft.latency_ms, strong_latency_ms=o.strong.latency_ms, latency_ms=o.latency_ms,
            weak_usage=o.draft.usage, strong_usage=o.strong.usage, degraded=o.degraded,
            request_id=q.request_id, api=q.api, metadata=q.metadata))
        self.metrics.log_backlog.set(self.log.backlog)


def sum_usage(*usages: Usage | None) -> Usage:
    total = Usage()
    for u in usages:
        if u:
            total.prompt_tokens += u.prompt_tokens
            total.completion_tokens += u.completion_tokens
            total.total_tokens += u.total_tokens
    return total
