"""Task metrics shared by the trainer (collaborative feedback, gate) and the evaluation harness."""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ANSWER_LINE = re.compile(r"answer\s*[:：]\s*(.+)", re.IGNORECASE)
_PUNCT = set(string.punctuation)


def normalize(text: str) -> str:
    """SQuAD-style normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def final_answer(text: str) -> str:
    """The answer part of a response: the last 'Answer: ...' line when there is one, else the text."""
    matches = _ANSWER_LINE.findall(text or "")
    return matches[-1].strip() if matches else (text or "").strip()


def _refs(reference: str | Sequence[str]) -> list[str]:
    return [reference] if isinstance(reference, str) else list(reference)


def exact_match(prediction: str, reference: str | Sequence[str]) -> float:
    pred = normalize(final_answer(prediction))
    return float(any(pred == normalize(r) for r in _refs(reference)))


def _f1(pred: list[str], ref: list[str]) -> float:
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, reference: str | Sequence[str]) -> float:
    """Token F1 of the final answer, best over the acceptable references."""
    pred = normalize(final_answer(prediction)).split()
    return max(_f1(pred, normalize(r).split()) for r in _refs(reference))


_FACT_TOKEN = re.compile(r"[A-Za-z]*\d[\w.%-]*|\b[A-Z][a-z]+\b")
_NOT_FACTS = {"The", "It", "A", "An", "At", "Answer", "Work", "So", "No", "Yes", "If", "Its", "Warranty", "Question"}


def fact_tokens(text: str) -> set[str]:
    """The numbers and names in a text (tokens with a digit, capitalised words): what a rationale's facts are
    made of."""
    return {t.lower().rstrip(".") for t in _FACT_TOKEN.findall(text or "") if t not in _NOT_FACTS}


def fact_recall(draft: str, rationale: str, question: str) -> float | None:
    """Share of the gold rationale's numbers and names that the draft states, leaving out those the question
    already gives (a product's name): does the weak model retrieve the facts a new question needs? None when the
    rationale has no such token."""
    facts = fact_tokens(rationale) - fact_tokens(question)
    if not facts:
        return None
    return len(facts & fact_tokens(draft)) / len(facts)


def first_label(prediction: str, labels: Sequence[str]) -> str | None:
    """The first of `labels` named in the answer part of a response (None when it names none)."""
    words = normalize(final_answer(prediction)).split()
    return next((w for w in words if w in labels), None)


def macro_f1(predictions: Sequence[str | None], golds: Sequence[str]) -> float:
    """Mean F1 over the classes that occur in the gold labels or the predictions. A prediction of None
    (no label named) is wrong for every class; a class that occurs nowhere does not count."""
    classes = sorted({g for g in golds} | {p for p in predictions if p is not None})
    scores = []
    for c in classes:
        tp = sum(p == c and g == c for p, g in zip(predictions, golds, strict=True))
        fp = sum(p == c and g != c for p, g in zip(predictions, golds, strict=True))
        fn = sum(p != c and g == c for p, g in zip(predictions, golds, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores) if scores else 0.0


def bootstrap_ci(
    values: Sequence[float], *, statistic=None, n: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of `statistic` (default: the mean) over items."""
    if not values:
        return (float("nan"), float("nan"))
    stat = statistic or (lambda xs: sum(xs) / len(xs))
    rng = random.Random(seed)
    k = len(values)
    samples = sorted(stat([values[rng.randrange(k)] for _ in range(k)]) for _ in range(n))
    lo = samples[int((1 - level) / 2 * n)]
    hi = samples[min(n - 1, int((1 + level) / 2 * n))]
    return (lo, hi)
