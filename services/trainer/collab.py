"""The collaboration path as the trainer runs it: strong alone, K weak drafts (one request, `n=K`),
strong refinements, scores. Same prompt templates as serving (shared/prompts.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from services.trainer.config import TrainerSettings
from services.trainer.evaluators import JUDGE_PROMPT, evaluate, parse_judge_score
from services.trainer.pairs import ScoredDraft
from shared.prompts import DraftFormat, strong_alone_messages, strong_messages, weak_messages


@dataclass
class Feedback:
    """Everything collaborative feedback measured for one question."""

    question: str
    prompt: list[dict[str, str]]  # the weak prompt
    strong_alone: str
    strong_alone_score: float
    drafts: list[ScoredDraft]


class CollabClient:
    def __init__(self, settings: TrainerSettings):
        self.settings = settings
        headers = {"Authorization": f"Bearer {settings.strong_api_key.get_secret_value()}"} if settings.strong_api_key else {}
        timeout = httpx.Timeout(settings.request_timeout_s, connect=5.0)
        self.weak = httpx.AsyncClient(base_url=f"{settings.weak_url}/v1", timeout=timeout)
        self.strong = httpx.AsyncClient(base_url=settings.strong_url, timeout=timeout, headers=headers)

    async def aclose(self) -> None:
        await self.weak.aclose()
        await self.strong.aclose()

    async def _chat(self, client: httpx.AsyncClient, **payload) -> list[str]:
        r = await client.post("/chat/completions", json=payload)
        r.raise_for_status()
        return [c["message"]["content"] or "" for c in r.json()["choices"]]

    async def drafts(self, question: str, domain: str, adapter: str | None, n: int, temperature: float,
                     context: str | None = None, seed: int | None = None) -> list[str]:
        payload = dict(model=adapter or self.settings.weak_model, n=n, temperature=temperature,
                       max_tokens=self.settings.draft_max_tokens,
                       messages=weak_messages(question, domain, context, DraftFormat.cot))
        if seed is not None:
            payload["seed"] = seed
        return await self._chat(self.weak, **payload)

    async def refine(self, question: str, domain: str, draft: str | None, context: str | None = None) -> str:
        messages = (strong_messages(question, draft, domain, context) if draft is not None
                    else strong_alone_messages(question, domain, context))
        return (await self._chat(self.strong, model=self.settings.strong_model, temperature=0,
                                 max_tokens=self.settings.strong_max_tokens, messages=messages))[0]

    async def judge(self, question: str, answer: str) -> float:
        text = (await self._chat(self.strong, model=self.settings.strong_model, temperature=0, max_tokens=8,
                                 messages=[{"role": "user", "content": JUDGE_PROMPT.format(
                                     question=question, answer=answer)}]))[0]
        return parse_judge_score(text)

    async def collaborate(self, question: str, domain: str, adapter: str | None, reference: str | None,
                          context: str | None = None) -> tuple[str, str, float]:
        """One greedy collaboration (as serving runs it): (draft, answer, score)."""
        draft = (await self.drafts(question, domain, adapter, 1, 0.0, context))[0]
        answer = await self.refine(question, domain, draft, context)
        return draft, answer, await evaluate(domain, question, answer, reference, self.judge)

    async def feedback(self, question: str, domain: str, adapter: str | None, reference: str | None,
                       context: str | None = None, seed: int | None = None) -> Feedback:
        s = self.settings
        alone, drafts = await asyncio.gather(
            self.refine(question, domain, None, context),
            self.drafts(question, domain, adapter, s.k_drafts, s.draft_temperature, context, seed))
        refined = await asyncio.gather(*(self.refine(question, domain, d, context) for d in drafts))
        scores = await asyncio.gather(
            evaluate(domain, question, alone, reference, self.judge),
            *(evaluate(domain, question, r, reference, self.judge) for r in refined))
        return Feedback(question, weak_messages(question, domain, context, DraftFormat.cot), alone, scores[0],
                        [ScoredDraft(d, r, sc) for d, r, sc in zip(drafts, refined, scores[1:], strict=True)])
