"""Evaluators E(answer) for collaborative feedback and gating: a task metric against a reference when
there is one (pluggable per domain), else the strong model as judge with a fixed rubric."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from shared.metrics import exact_match, final_answer, first_label, normalize, token_f1  # noqa: F401 - re-exported


def label_match(labels: tuple[str, ...]) -> Callable[[str, str], float]:
    """Accuracy for label tasks: the first of `labels` named in the answer must be the reference."""
    def score(prediction: str, reference: str) -> float:
        return float(first_label(prediction, labels) == normalize(reference))
    return score


def contains_reference(prediction: str, reference: str) -> float:
    """1 when the normalised reference appears in the normalised answer (free-form live feedback)."""
    ref = normalize(reference)
    return float(bool(ref) and ref in normalize(prediction))


METRICS: dict[str, Callable[[str, str], float]] = {
    "ifqa": token_f1,
    "pubmedqa": label_match(("yes", "no", "maybe")),
    "ethics": label_match(("acceptable", "wrong")),
    "ethics-deontology": label_match(("reasonable", "unreasonable")),
    "synthetic": lambda p, r: max(exact_match(p, r), token_f1(p, r)),
}


def metric_for(domain: str) -> Callable[[str, str], float]:
    """Per-domain metric; domains without one use max(token F1, containment) of the reference."""
    return METRICS.get(domain, lambda p, r: max(token_f1(p, r), contains_reference(p, r)))


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
