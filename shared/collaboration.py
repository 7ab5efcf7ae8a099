"""CoWest's collaboration, y* = strong(x, weak(x)), in one place: the requests each stage sends (prompts,
sampling, token limits), the retries (through `Upstream`) and what happens when a stage fails.

Serving (the orchestrator), collaborative feedback and the promotion gate (the trainer) and the evaluation
harness all build their model requests here, so the path that is trained and gated is the path users get:
for the same question, adapter and sampling, the upstream requests are byte-for-byte the same.

Degraded modes, each flagged in the outcome:
- weak server down or failing  -> the strong model answers alone (`weak_unavailable`)
- strong endpoint failing after retries -> the weak draft is the answer (`strong_unavailable`),
  unless `strong_fallback="error"`, which raises `CollaborationFailed`
- both failing -> `CollaborationFailed` with both reasons

Besides the collaboration itself (`mode="collab"`), one request can run either model alone through the same
requests: `weak` (the draft is the answer: what the weak model would say) and `strong` (the strong model
without a draft). Evaluation compares the three; serving may use `strong` for a domain where drafts do not
help yet.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from shared import calculator
from shared.knowledge import KnowledgeCache, Lookup
from shared.prompts import DraftFormat, get_domain, strong_alone_messages, strong_messages, weak_messages
from shared.records import Usage
from shared.upstream import Upstream, UpstreamError

logger = logging.getLogger(__name__)
Mode = Literal["collab", "weak", "strong"]
MODES: tuple[str, ...] = ("collab", "weak", "strong")


@dataclass(frozen=True)
class Limits:
    """Args:
    weak_max_tokens: the draft's token budget (a rationale plus an answer line).
    strong_max_tokens: the refinement's token budget.
    strong_fallback: when the strong stage fails after retries, answer with the draft ("draft", flagged
        degraded) or fail ("error").
    """

    weak_max_tokens: int = 256
    strong_max_tokens: int = 512
    strong_fallback: Literal["draft", "error"] = "draft"


@dataclass
class Ask:
    """One collaboration request: the question, its setting, and per-stage sampling overrides
    (temperature, top_p, seed, stop, max_tokens)."""

    question: str
    domain: str
    adapter: str | None = None  # the weak model to draft with: an adapter's served name; None: the base model
    draft_format: DraftFormat | None = None  # None: the domain's (its spec's draft_format)
    context: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)
    weak: dict[str, Any] = field(default_factory=dict)
    strong: dict[str, Any] = field(default_factory=dict)
    mode: Mode = "collab"
    draft: str | None = None  # a given draft to refine instead of the weak model's (e.g. a gold rationale)
    # Knowledge lookup (shared/knowledge.py): None = the domain's way (drafts look up when its spec says
    # `lookup`; the strong model alone never does); True / False force it. True with mode "strong" is
    # strong + retrieval: the strong model alone, given the facts the weak model would get.
    lookup: bool | None = None
    facts: Lookup | None = None  # what the lookup returned (filled by `Collaboration.look_up`)
    why: str | None = None  # why this mode ran (the request's choice, the domain's measured default, the policy)


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
    draft: Stage
    strong: Stage
    answer: str
    degraded: str | None


class CollaborationFailed(Exception):
    """Nothing is left to answer with; `code` says which part failed."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def draft_degraded(draft: Stage) -> str | None:
    """Why a collaboration runs degraded after its weak stage: the weak model failed (the strong one answers
    alone); None when it drafted, or was not asked."""
    return None if draft.error is None else f"weak_unavailable: {draft.error}"


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 1)


def _draft_format(ask: Ask) -> DraftFormat:
    return ask.draft_format or get_domain(ask.domain).draft_format


def parse_usage(body: dict) -> Usage | None:
    """The token counts of a response or chunk; None when absent or malformed (null counts): usage is
    reported, never a reason to fail an answer."""
    try:
        return Usage(**body["usage"]) if isinstance(body.get("usage"), dict) else None
    except ValueError:
        return None


async def _complete(upstream: Upstream, payload: dict, headers: dict[str, str] | None, stage: Stage) -> Stage:
    """One chat completion into `stage` (text, usage, latency); a failure after retries goes to `stage.error`."""
    t0 = time.perf_counter()
    try:
        body = await upstream.chat(payload, headers)
        stage.text = body["choices"][0]["message"]["content"] or ""
        stage.usage = parse_usage(body)
    except UpstreamError as exc:
        logger.warning("%s", exc)  # the full text for operators; clients and traces get `public`
        stage.error = exc.public
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        logger.warning("%s answered without a usable message: %r", upstream.name, exc)
        stage.error = f"{upstream.name}: sent a response without a message"
    stage.latency_ms = _ms(t0)
    return stage


class Collaboration:
    def __init__(
        self,
        weak: Upstream,
        strong: Upstream,
        weak_model: str,
        strong_model: str,
        limits: Limits | None = None,
        knowledge: KnowledgeCache | None = None,
    ):
        self.weak, self.strong = weak, strong
        self.weak_model, self.strong_model = weak_model, strong_model
        self.limits = limits or Limits()
        self.knowledge = knowledge

    async def look_up(self, ask: Ask) -> Lookup | None:
        """Fill `ask.facts` from the knowledge the drafting adapter version was trained with (the domain's newest
        for the base model), when the request or the domain's spec asks for a lookup. No knowledge published:
        no lookup (the prompt is the plain one)."""
        if ask.facts is None and self.knowledge is not None:
            use = get_domain(ask.domain).knowledge
            wanted = ask.lookup if ask.lookup is not None else use.mechanism == "lookup" and ask.mode != "strong"
            if wanted and (index := await self.knowledge.index(ask.domain, ask.adapter)) is not None:
                ask.facts = index.search(ask.question, use.top_k)
        return ask.facts

    # --- requests -------------------------------------------------------------------------
    def draft_payload(self, ask: Ask, n: int | None = None) -> dict:
        """The weak model's chat request; `n` > 1 samples several drafts in one request (feedback)."""
        messages = weak_messages(ask.question, ask.domain, ask.context, _draft_format(ask), ask.history, ask.facts)
        payload = {
            "model": ask.adapter or self.weak_model,
            "max_tokens": self.limits.weak_max_tokens,
            "messages": messages,
            **ask.weak,
        }
        return payload | ({"n": n} if n and n > 1 else {})

    def strong_payload(self, ask: Ask, draft: str | None) -> dict:
        """The strong model's request: refine `draft`, or answer alone when there is none (the baseline that
        collaborative feedback compares against, and the degraded path when the weak server is down)."""
        if draft:
            messages = strong_messages(ask.question, draft, ask.domain, ask.context, _draft_format(ask), ask.history)
        else:
            facts = ask.facts if ask.lookup else None  # strong + retrieval only when asked for
            messages = strong_alone_messages(ask.question, ask.domain, ask.context, ask.history, facts)
        return {
            "model": self.strong_model,
            "max_tokens": self.limits.strong_max_tokens,
            "messages": messages,
            **ask.strong,
        }

    # --- stages ---------------------------------------------------------------------------
    async def draft(self, ask: Ask, headers: dict[str, str] | None = None) -> Stage:
        """The weak model's draft; never raises (a failure is in `stage.error`)."""
        stage = Stage(model=self.weak_model, adapter=ask.adapter)
        await self.look_up(ask)
        return await _complete(self.weak, self.draft_payload(ask), headers, stage)

    async def drafts(self, ask: Ask, n: int) -> list[str]:
        """`n` sampled drafts in one request (vLLM batches them); raises UpstreamError."""
        await self.look_up(ask)
        body = await self.weak.chat(self.draft_payload(ask, n))
        return [c["message"]["content"] or "" for c in body["choices"]]

    async def refine(self, ask: Ask, draft: str | None, headers: dict[str, str] | None = None) -> Stage:
        """The strong model given the draft (alone when `draft` is None), its Calc line computed where the domain
        has a calculator; never raises."""
        stage = await _complete(self.strong, self.strong_payload(ask, draft), headers, Stage(model=self.strong_model))
        if stage.text and get_domain(ask.domain).calculator:
            stage.text = calculator.apply(stage.text)[0]
        return stage

    def fallback(self, draft: Stage, error: str) -> tuple[str, str]:
        """(answer, degraded reason) when the strong stage failed; raises when nothing is left."""
        if draft.text is None and draft.error is None:  # the strong model was asked alone
            raise CollaborationFailed("strong_unavailable", f"the strong model failed: {error}")
        if draft.text and self.limits.strong_fallback == "draft":
            return draft.text, f"strong_unavailable: {error}"
        if draft.text:
            raise CollaborationFailed("strong_unavailable", f"the strong model failed: {error}")
        if draft.error is None:  # the weak model answered with nothing: no draft to fall back on
            raise CollaborationFailed(
                "strong_unavailable", f"the strong model failed ({error}) and the draft is empty"
            )
        raise CollaborationFailed(
            "models_unavailable", f"both model servers are unavailable. weak: {draft.error}; strong: {error}"
        )

    async def run(self, ask: Ask, headers: dict[str, str] | None = None) -> Outcome:
        """Draft, then refine (or one model alone, by `ask.mode`); degraded instead of failing where the
        collaboration can still answer."""
        if ask.mode == "weak":
            draft = await self.draft(ask, headers)
            if draft.text is None:
                raise CollaborationFailed("weak_unavailable", f"the weak model failed: {draft.error}")
            return Outcome(draft, Stage(), draft.text, None)
        if ask.mode == "strong":
            await self.look_up(ask)
            strong = await self.refine(ask, None, headers)
            if strong.error is not None:
                raise CollaborationFailed("strong_unavailable", f"the strong model failed: {strong.error}")
            return Outcome(Stage(), strong, strong.text or "", None)
        draft = Stage(text=ask.draft, latency_ms=0.0) if ask.draft is not None else await self.draft(ask, headers)
        degraded = draft_degraded(draft)
        strong = await self.refine(ask, draft.text, headers)
        if strong.error is None:
            return Outcome(draft, strong, strong.text or "", degraded)
        answer, degraded = self.fallback(draft, strong.error)
        return Outcome(draft, strong, answer, degraded)
