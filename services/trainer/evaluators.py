"""Evaluators E(answer) for collaborative feedback and gating: the domain's metric against a reference when
there is one (its spec says which), else the strong model as judge with a fixed rubric."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from shared import domains
from shared.metrics import exact_match, final_answer, token_f1  # noqa: F401 - re-exported

Metric = Callable[[str, str], float]  # (answer, reference) -> score in [0, 1]
_overrides: dict[str, Metric] = {}


def metric_for(domain: str) -> Metric:
    """The domain's metric (its spec's, shared/domains.py: unknown domains use the general one)."""
    return _overrides.get(domain) or domains.get(domain).score


@contextmanager
def metric_override(domain: str, metric: Metric) -> Iterator[None]:
    """Score `domain` with `metric` in this process while the block runs. For experiments that need a metric
    no spec offers: the tests use answer length, so that tiny models' drafts always differ in score."""
    _overrides[domain] = metric
    try:
        yield
    finally:
        _overrides.pop(domain, None)


JUDGE_PROMPT = (
    "You are grading an answer.\nQuestion: {question}\nAnswer: {answer}\n"
    "Score the answer from 0 to 10 for correctness and for the coherence of its reasoning. "
    "Reply with the number only."
)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def parse_judge_score(text: str) -> float:
    """The judge's first number, scaled to [0, 1]; 0 when it gave none."""
    match = _NUMBER.search(text or "")
    return min(float(match.group()), 10.0) / 10.0 if match else 0.0


Judge = Callable[[str, str], Awaitable[float]]  # (question, answer) -> score in [0, 1]


async def evaluate(domain: str, question: str, answer: str, reference: str | None, judge: Judge | None) -> float:
    if reference is not None:
        return metric_for(domain)(answer, reference)
    if judge is None:
        raise ValueError("no reference and no judge: cannot score")
    return await judge(question, answer)
