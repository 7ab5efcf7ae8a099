"""CoWest inference as served, in the domain's terms: a `Question` becomes a `shared.collaboration.Ask` (the one
implementation of draft -> refine that the trainer and the evaluation harness use too), plus what serving adds:
the domain's active adapter and the draft policy, request ids passed upstream, stage metrics, streaming and the
trace log.

This module knows nothing of HTTP: when nothing is left to answer with it raises `CollaborationFailed`
(errors.py maps it to a 503), and the request's context (ids, which API) comes separately from the question.
Degraded modes are described in shared/collaboration.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Literal

from services.orchestrator.adapters import AdapterAliases
from services.orchestrator.config import OrchestratorSettings
from services.orchestrator.metrics import Metrics
from services.orchestrator.tracelog import TraceLog
from shared import calculator
from shared import domains as domain_specs
from shared.adapters import BASE_ADAPTER
from shared.collaboration import Ask, Collaboration, Mode, Stage, draft_degraded, parse_usage
from shared.domains import DraftFormat
from shared.domains import get as get_domain
from shared.knowledge import KnowledgeCache
from shared.modes import DefaultModes
from shared.records import TraceRecord, Usage
from shared.upstream import Upstream, UpstreamError

logger = logging.getLogger(__name__)


def new_trace_id() -> str:
    return f"tr-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class RequestContext:
    """Who asked and how: ids that follow the request upstream and into its trace."""

    trace_id: str = field(default_factory=new_trace_id)
    request_id: str | None = None
    traceparent: str | None = None
    api: Literal["collaborate", "chat"] = "collaborate"
    stream: bool = False
    started: float = field(default_factory=time.perf_counter)

    def headers(self) -> dict[str, str]:
        return {k: v for k, v in (("X-Request-Id", self.request_id), ("traceparent", self.traceparent)) if v}

    @property
    def route(self) -> str:
        return f"{self.api}_stream" if self.stream else self.api


@dataclass
class Question:
    question: str
    domain: str
    draft_format: DraftFormat | None = None  # None: the domain's
    context: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)
    weak: dict[str, Any] = field(default_factory=dict)  # sampling overrides per stage
    strong: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    adapter: str | None = None  # override of the domain's active adapter; BASE_ADAPTER for none
    mode: Mode | None = None  # collab | weak | strong (one model alone); None: the draft policy decides
    draft: str | None = None  # a given draft to refine instead of the weak model's
    user: str | None = None  # the end user (OpenAI `user`): keeps one user on one version during a canary
    lookup: bool | None = None  # knowledge lookup: None = the domain's way (shared/collaboration.py `Ask.lookup`)


@dataclass
class Outcome:
    question: Question
    context: RequestContext
    ask: Ask  # as resolved: the adapter and mode that ran
    draft: Stage
    strong: Stage
    answer: str
    degraded: str | None
    latency_ms: float

    @property
    def usage(self) -> Usage:
        return sum_usage(self.draft.usage, self.strong.usage)


@dataclass
class Drafted:
    """A streamed request after its weak stage: what the first chunk reports."""

    ask: Ask
    draft: Stage

    @property
    def degraded(self) -> str | None:
        return draft_degraded(self.draft)


class _HeldAnswer:
    """A streamed reply whose `Answer:` line waits for the calculator: text before that line streams as it comes,
    the rest goes out once, computed, when the stream ends."""

    def __init__(self) -> None:
        self.text, self.sent = "", 0

    def add(self, delta: str) -> str:
        self.text += delta
        answer = calculator.ANSWER_START.search(self.text)
        safe = answer.start() if answer else self.text.rfind("\n") + 1
        out, self.sent = self.text[self.sent : max(safe, self.sent)], max(safe, self.sent)
        return out

    def finish(self) -> str:
        self.text = calculator.apply(self.text)[0]
        return self.text[self.sent :]


# What `Collaborator.stream` yields.
@dataclass
class Delta:
    text: str


@dataclass
class Degraded:
    reason: str


@dataclass
class Interrupted:
    """The strong model failed after tokens went out: no clean fallback is left."""

    message: str
    code: str = "strong_interrupted"


@dataclass
class Finished:
    usage: Usage


StreamEvent = Delta | Degraded | Interrupted | Finished


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 1)


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
        ends = settings.endpoints
        self.collab = Collaboration(
            weak, strong, ends.weak_model, ends.strong_model, settings.limits(), KnowledgeCache(log.redis)
        )
        self.modes = DefaultModes(log.redis)

    def domains(self) -> list[str]:
        """The domains served now: the configured built-ins, registered specs, and any with an active adapter."""
        return sorted(set(self.settings.domains) | set(domain_specs.registered()) | set(self.aliases.snapshot()))

    def resolve(self, q: Question, ctx: RequestContext) -> Ask:
        """The collaboration request: the domain's active adapter (or its canary's candidate, for the canary's
        share of users or requests) unless the request names one; the mode the request names, else the draft
        policy's (no draft for a domain without an adapter, by default)."""
        active = self.aliases.pick(q.domain, q.user or ctx.trace_id)
        adapter = active if q.adapter is None else (None if q.adapter == BASE_ADAPTER else q.adapter)
        mode, lookup, why = q.mode, q.lookup, "the request's mode"
        measured = self.modes.for_version(q.domain, adapter) if q.draft is None else None
        if mode is None and measured is not None:
            mode, why = measured.mode, f"the domain's measured default ({measured.reason})"
            lookup = measured.lookup if lookup is None else lookup
        elif mode is None:
            drafts_help = (
                active is not None
                or q.adapter is not None
                or q.draft is not None
                or self.settings.draft_policy == "always"
            )
            mode = "collab" if drafts_help else "strong"
            why = (
                "an adapter drafts for this domain (no measured default for its version)"
                if drafts_help
                else "no adapter for this domain yet: a draft would only cost (draft policy)"
            )
        if mode != "strong":
            self.metrics.draft_adapter.labels(q.domain, adapter or BASE_ADAPTER).inc()
        return Ask(
            question=q.question,
            domain=q.domain,
            adapter=adapter,
            draft_format=q.draft_format or get_domain(q.domain).draft_format,
            context=q.context,
            history=q.history,
            weak=q.weak,
            strong=q.strong,
            mode=mode,
            draft=q.draft,
            lookup=lookup,
            why=why,
        )

    # --- whole requests -------------------------------------------------------------------
    async def run(self, q: Question, ctx: RequestContext) -> Outcome:
        await self.modes.refresh()
        ask = self.resolve(q, ctx)
        done = await self.collab.run(ask, ctx.headers())
        self._observe("weak", q.domain, done.draft)
        self._observe("strong", q.domain, done.strong)
        outcome = Outcome(q, ctx, ask, done.draft, done.strong, done.answer, done.degraded, _ms(ctx.started))
        await self.record(outcome)
        return outcome

    # --- streaming ------------------------------------------------------------------------
    async def draft(self, q: Question, ctx: RequestContext) -> Drafted:
        """The weak stage of a streamed request; never raises. An empty draft (no text, no error) when the
        request runs the strong model alone."""
        await self.modes.refresh()
        ask = self.resolve(q, ctx)
        if ask.mode == "strong":
            await self.collab.look_up(ask)  # strong + retrieval, when asked for
            return Drafted(ask, Stage())
        stage = await self.collab.draft(ask, ctx.headers())
        self._observe("weak", q.domain, stage)
        return Drafted(ask, stage)

    async def stream(self, q: Question, ctx: RequestContext, drafted: Drafted) -> AsyncGenerator[StreamEvent, None]:
        """The strong refinement as events; raises CollaborationFailed when nothing is left before any token.
        Records the trace when the stream ends, however it ends (a client that disconnects included)."""
        draft, ask = drafted.draft, drafted.ask
        strong = Stage(model=self.collab.strong_model)
        parts: list[str] = []
        degraded = drafted.degraded
        t0 = time.perf_counter()
        payload = self.collab.strong_payload(ask, draft.text) | {"stream_options": {"include_usage": True}}
        # With a calculator the Answer line is held back until the Calc line's value can replace its number.
        held = _HeldAnswer() if get_domain(q.domain).calculator else None
        try:
            try:
                async for chunk in self.collab.strong.stream_chat(payload, ctx.headers()):
                    strong.usage = parse_usage(chunk) or strong.usage
                    for choice in chunk.get("choices") or []:
                        if text := (choice.get("delta") or {}).get("content"):
                            parts.append(text)
                            if out := (held.add(text) if held else text):
                                yield Delta(out)
                if held and (rest := held.finish()):
                    parts[:] = [held.text]
                    yield Delta(rest)
            except UpstreamError as exc:
                logger.warning("%s", exc)
                strong.error = exc.public
                if parts:
                    degraded = f"strong_interrupted: {exc.public}"
                    yield Interrupted(f"the strong model failed mid-stream: {exc.public}")
                    return
                answer, degraded = self.collab.fallback(draft, strong.error)
                parts.append(answer)
                yield Degraded(degraded)
                yield Delta(answer)
            yield Finished(sum_usage(draft.usage, strong.usage))
        finally:
            strong.text = "".join(parts) if strong.error is None else None
            strong.latency_ms = _ms(t0)
            self._observe("strong", q.domain, strong)
            outcome = Outcome(q, ctx, ask, draft, strong, "".join(parts), degraded, _ms(ctx.started))
            # Shielded: a client that disconnects must not cancel the log write.
            await asyncio.shield(self.record(outcome))

    # --- metrics and the trace log --------------------------------------------------------
    def _observe(self, stage_name: str, domain: str, stage: Stage) -> None:
        if stage.latency_ms is not None:
            self.metrics.stage_latency.labels(stage_name, domain).observe(stage.latency_ms / 1000)

    async def record(self, o: Outcome) -> None:
        """Count the served request and log its trace (every served request, degraded ones too)."""
        q, ctx = o.question, o.context
        self.metrics.requests.labels(ctx.route, q.domain, "200").inc()
        self.metrics.stage_latency.labels("total", q.domain).observe(o.latency_ms / 1000)
        if o.degraded:
            self.metrics.degraded.labels(q.domain, o.degraded.split(":")[0]).inc()
        await self.log.log_trace(
            TraceRecord(
                trace_id=ctx.trace_id,
                domain=q.domain,
                draft_format=(o.ask.draft_format or DraftFormat.cot).value,
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
                request_id=ctx.request_id,
                api=ctx.api,
                mode=o.ask.mode,
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
