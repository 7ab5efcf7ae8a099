"""A metric every draft of the tiny models can win or lose on: the answer's length (up to 300 characters)."""

from __future__ import annotations

from contextlib import AbstractContextManager

from services.trainer.evaluators import metric_override


def length_score(answer: str, reference: str) -> float:
    return min(len(answer), 300) / 300


def scored_by_length(domain: str) -> AbstractContextManager[None]:
    return metric_override(domain, length_score)
