"""CoWest inference as served: a request becomes a `shared.collaboration.Ask` (the one implementation of
draft -> refine that the trainer and the evaluation harness use too), plus what serving adds: the domain's
active adapter, request ids passed upstream, metrics, streaming and the trace log. Degraded modes are
described in shared/collaboration.py; when nothing is left to answer with, the request gets a 503.
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
from shared.collaboration import BASE_ADAPTER, Ask, Collaboration, CollaborationFailed, Mode, Stage
from shared.prompts import DraftFormat
from shared.records import TraceRecord, Usage
from shared.upstream import Upstream, UpstreamError

BASE_MODEL = BASE_ADAPTER  # the `adapter` override that means no adapter


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
    mode: Mode | None = None  # collab | weak | strong (one model alone); None: the draft policy decides
    draft: str | None = None  # a given draft to refine instead of the weak model's
    request_id: str | None = None
    traceparent: str | None = None
    api: str = "collaborate"
    trace_id: str = field(default_factory=new_trace_id)
    started: float = field(default_factory=time.perf_counter)

    def headers(self) -> dict[str, str]:
        return {k: v for k, v in (("X-Request-Id", self.request_id), ("traceparent", self.traceparent)) if v}


@dataclass
class Outcome:
    question: Question
    draft: Stage
    strong: Stage
    answer: str
    degraded: str | None
    latency_ms: float


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 1)


def _unavailable(exc: CollaborationFailed) -> APIError:
    """Nothing left to answer with: 503 with the failing part as the error code."""
    return APIError(503, str(exc), code=exc.code, headers={"Retry-After": "5"})


class Collaborator:
    def __init__(
        self,
        settings: OrchestratorSettings,
        weak: Upstream,
        strong: Upstream,
        aliases: AdapterAliases,
        log: TraceLog,
        metrics: Metrics,
    ):
        self.settings, self.aliases, self.log, self.metrics = settings, aliases, log, metrics
        self.collab = Collaboration(
            weak, strong, settings.endpoints.weak_model, settings.endpoints.strong_model, settings.limits()
        )

    def ask(self, q: Question) -> Ask:
        """The collaboration request: the domain's active adapter unless the request names one; the mode the
        request names, else the draft policy's (no draft for a domain without an adapter, by default)."""
        active = self.aliases.get(q.domain)
        adapter = active if q.adapter is None else (None if q.adapter == BASE_MODEL else q.adapter)
        mode = q.mode
        if mode is None:
            drafts_help = (
                active is not None
                or q.adapter is not None
                or q.draft is not None
                or self.settings.draft_policy == "always"
            )
            mode = "collab" if drafts_help else "strong"
        return Ask(
            question=q.question,
            domain=q.domain,
            adapter=adapter,
            draft_format=q.draft_format,
            context=q.context,
            history=q.history,
            weak=q.weak.params(),
            strong=q.strong.params(),
            mode=mode,
            draft=q.draft,
        )

    # --- stages ---------------------------------------------------------------------------
    async def draft(self, q: Question) -> Stage:
        """The weak model's draft under the domain's active adapter; never raises. An empty stage (no text,
        no error) when the request runs the strong model alone."""
        ask = self.ask(q)
        q.mode = ask.mode  # resolved once: the rest of the request (and its trace) follows it
        if ask.mode == "strong":
            return Stage()
        stage = await self.collab.draft(ask, q.headers())
        self.metrics.stage_latency.labels("weak", q.domain).observe(stage.latency_ms / 1000)
        return stage

    def fallback(self, q: Question, draft: Stage, error: str) -> tuple[str, str]:
        """(answer, degraded reason) when the strong stage failed; 503 when nothing is left."""
        try:
            return self.collab.fallback(draft, error)
        except CollaborationFailed as exc:
            raise _unavailable(exc) from None

    # --- whole requests -------------------------------------------------------------------
    async def run(self, q: Question) -> Outcome:
        ask = self.ask(q)
        q.mode = ask.mode
        try:
            done = await self.collab.run(ask, q.headers())
        except CollaborationFailed as exc:
            raise _unavailable(exc) from None
        for name, stage in (("weak", done.draft), ("strong", done.strong)):
            if stage.latency_ms is not None:
                self.metrics.stage_latency.labels(name, q.domain).observe(stage.latency_ms / 1000)
        outcome = Outcome(q, done.draft, done.strong, done.answer, done.degraded, _ms(q.started))
        await self.record(outcome)
        return outcome

    async def stream(self, q: Question, draft: Stage, include_usage: bool) -> AsyncIterator[dict]:
        """The strong refinement as OpenAI stream deltas ({"content"} / {"usage"} / {"degraded"});
        records the trace when the stream ends, however it ends."""
        strong = Stage(model=self.settings.endpoints.strong_model)
        parts: list[str] = []
        degraded = None if draft.error is None else f"weak_unavailable: {draft.error}"
        t0 = time.perf_counter()
        payload = self.collab.strong_payload(self.ask(q), draft.text)
        payload["stream_options"] = {"include_usage": True}
        try:
            try:
                async for chunk in self.collab.strong.stream_chat(payload, q.headers()):
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
                    yield {
                        "error": APIError(502, f"the strong model failed mid-stream: {exc}", code="strong_interrupted")
                    }
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
            self.metrics.stage_latency.labels("strong", q.domain).observe(strong.latency_ms / 1000)
            outcome = Outcome(q, draft, strong, "".join(parts), degraded, _ms(q.started))
            # Shielded: a client that disconnects must not cancel the log write.
            await asyncio.shield(self.record(outcome))

    async def record(self, o: Outcome) -> None:
        q = o.question
        self.metrics.stage_latency.labels("total", q.domain).observe(o.latency_ms / 1000)
        if o.degraded:
            self.metrics.degraded.labels(q.domain, o.degraded.split(":")[0]).inc()
        await self.log.log_trace(
            TraceRecord(
                trace_id=q.trace_id,
                domain=q.domain,
                draft_format=q.draft_format.value,
                question=q.question,
                context=q.context,
                history=q.history,
                draft=o.draft.text,
                answer=o.answer,
                weak_model=o.draft.model,
                weak_adapter=o.draft.adapter,
                strong_model=o.strong.model,
                weak_latency_ms=o.draft.latency_ms,
                strong_latency_ms=o.strong.latency_ms,
                latency_ms=o.latency_ms,
                weak_usage=o.draft.usage,
                strong_usage=o.strong.usage,
                degraded=o.degraded,
                request_id=q.request_id,
                api=q.api,
                mode=q.mode or "collab",
                metadata=q.metadata,
            )
        )
        self.metrics.log_backlog.set(self.log.backlog)


def sum_usage(*usages: Usage | None) -> Usage:
    total = Usage()
    for u in usages:
        if u:
            total.prompt_tokens += u.prompt_tokens
            total.completion_tokens += u.completion_tokens
            total.total_tokens += u.total_tokens
    return total
