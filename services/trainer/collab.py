"""The collaboration as the trainer needs it, on the one implementation serving uses
(shared/collaboration.py: same prompts, limits, retries): strong alone, K sampled weak drafts (one request,
`n=K`), the strong refinement of each, scores; and the greedy collaboration the gate scores."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from services.trainer.config import TrainerSettings
from services.trainer.evaluators import JUDGE_PROMPT, evaluate, parse_judge_score
from services.trainer.pairs import ScoredDraft
from shared.collaboration import Ask, Collaboration, Limits
from shared.knowledge import KnowledgeCache
from shared.upstream import Upstream

GREEDY = {"temperature": 0}  # the gate and evaluation decode greedily: the same item gives the same answer


class StageFailed(RuntimeError):
    """A model call failed after its retries: the question is retried later, never scored as a 0."""


@dataclass
class Feedback:
    """Everything collaborative feedback measured for one question."""

    question: str
    prompt: list[dict[str, str]]  # the weak prompt
    strong_alone: str
    strong_alone_score: float
    drafts: list[ScoredDraft]


class CollabClient:
    def __init__(self, settings: TrainerSettings, knowledge: KnowledgeCache | None = None):
        """`knowledge`: where drafts look their facts up (the adapter version's knowledge, as serving does)."""
        self.settings = settings
        ends = settings.endpoints
        key = ends.strong_key()
        weak = Upstream(
            "weak", ends.weak_url, timeout_s=settings.request_timeout_s, connect_timeout_s=5.0, api_key=ends.weak_key()
        )
        strong = Upstream(
            "strong",
            ends.strong_url,
            timeout_s=settings.request_timeout_s,
            connect_timeout_s=5.0,
            retries=settings.strong_retries,
            api_key=key,
        )
        self.collab = Collaboration(
            weak,
            strong,
            ends.weak_model,
            ends.strong_model,
            Limits(weak_max_tokens=settings.draft_max_tokens, strong_max_tokens=settings.strong_max_tokens),
            knowledge,
        )

    async def aclose(self) -> None:
        await self.collab.weak.aclose()
        await self.collab.strong.aclose()

    async def drafts(
        self,
        question: str,
        domain: str,
        adapter: str | None,
        n: int,
        temperature: float,
        context: str | None = None,
        seed: int | None = None,
    ) -> tuple[list[str], list[dict[str, str]]]:
        """`n` sampled drafts and the weak prompt they answer (with the facts the lookup gave, if any): the DPO
        pairs are trained on exactly that prompt."""
        sampling = {"temperature": temperature} | ({"seed": seed} if seed is not None else {})
        ask = Ask(question, domain, adapter, context=context, weak=sampling)
        drafts = await self.collab.drafts(ask, n)
        return drafts, self.collab.draft_payload(ask)["messages"]

    async def refine(self, question: str, domain: str, draft: str | None, context: str | None = None) -> str:
        stage = await self.collab.refine(Ask(question, domain, context=context, strong=GREEDY), draft)
        if stage.error is not None:
            raise StageFailed(stage.error)
        return stage.text or ""

    async def judge(self, question: str, answer: str) -> float:
        body = await self.collab.strong.chat(
            {
                "model": self.settings.endpoints.strong_model,
                "temperature": 0,
                "max_tokens": 8,
                "messages": [{"role": "user", "content": JUDGE_PROMPT.format(question=question, answer=answer)}],
            }
        )
        return parse_judge_score(body["choices"][0]["message"]["content"] or "")

    async def collaborate(
        self, question: str, domain: str, adapter: str | None, reference: str | None, context: str | None = None
    ) -> tuple[str, str, float]:
        """One greedy collaboration, exactly as serving runs it: (draft, answer, score). A degraded answer
        (a server failed) raises instead of being scored."""
        outcome = await self.collab.run(Ask(question, domain, adapter, context=context, weak=GREEDY, strong=GREEDY))
        if outcome.degraded:
            raise StageFailed(outcome.degraded)
        draft = outcome.draft.text or ""
        return draft, outcome.answer, await evaluate(domain, question, outcome.answer, reference, self.judge)

    async def feedback(
        self,
        question: str,
        domain: str,
        adapter: str | None,
        reference: str | None,
        context: str | None = None,
        seed: int | None = None,
    ) -> Feedback:
        s = self.settings
        alone, (drafts, prompt) = await asyncio.gather(
            self.refine(question, domain, None, context),
            self.drafts(question, domain, adapter, s.k_drafts, s.draft_temperature, context, seed),
        )
        refined = await asyncio.gather(*(self.refine(question, domain, d, context) for d in drafts))
        scores = await asyncio.gather(
            evaluate(domain, question, alone, reference, self.judge),
            *(evaluate(domain, question, r, reference, self.judge) for r in refined),
        )
        return Feedback(
            question,
            prompt,
            alone,
            scores[0],
            [ScoredDraft(d, r, sc) for d, r, sc in zip(drafts, refined, scores[1:], strict=True)],
        )
