"""Collaborative feedback: which weak drafts helped the strong model (CoWest's preference signal).

For a question x: z = strong(x) alone; K drafts y_k from the weak model; y*_k = strong(x, y_k).
Δ_k = E(y*_k) - E(z). Drafts with Δ > 0 are chosen, Δ <= 0 rejected. A question gives at most
`max_pairs` pairs (best chosen vs worst rejected first), each with chosen Δ - rejected Δ >= `margin`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, Field


@dataclass(frozen=True)
class ScoredDraft:
    draft: str
    refined: str  # the strong model's answer given this draft
    score: float  # E(y*_k)


class PreferencePair(BaseModel):
    """One DPO pair, with provenance. `pair_id` makes writing it idempotent."""

    pair_id: str
    domain: str
    round: int
    question_id: str
    prompt: list[dict[str, str]]  # the weak model's chat prompt, exactly as serving sends it
    chosen: str
    rejected: str
    chosen_delta: float
    rejected_delta: float
    strong_alone_score: float
    adapter: str | None = None  # the adapter version that wrote the drafts
    trace_ids: list[str] = Field(default_factory=list)


def deltas(drafts: list[ScoredDraft], strong_alone: float) -> list[float]:
    return [d.score - strong_alone for d in drafts]


def select_pairs(
    drafts: list[ScoredDraft], strong_alone: float, margin: float = 0.0, max_pairs: int = 1
) -> list[tuple[ScoredDraft, ScoredDraft, float, float]]:
    """(chosen, rejected, Δ chosen, Δ rejected) tuples: best chosen with worst rejected, then the next
    best with the next worst, while the margin holds and up to `max_pairs`. Duplicate texts are skipped."""
    scored = list(zip(drafts, deltas(drafts, strong_alone), strict=True))
    chosen = sorted([s for s in scored if s[1] > 0], key=lambda s: -s[1])
    rejected = sorted([s for s in scored if s[1] <= 0], key=lambda s: s[1])
    pairs: list[tuple[ScoredDraft, ScoredDraft, float, float]] = []
    used: set[str] = set()
    for (c, dc), (r, dr) in zip(chosen, rejected, strict=False):  # as many pairs as the shorter side
        if len(pairs) >= max_pairs or dc - dr < margin:
            break
        if c.draft.strip() == r.draft.strip() or c.draft in used or r.draft in used:
            continue
        used.update((c.draft, r.draft))
        pairs.append((c, r, dc, dr))
    return pairs
