"""The promotion gate: a candidate adapter replaces the active one only when held-out evidence says it is
no worse, for the collaboration users get and for the weak model's own drafts.

Why each rule (all measured failures of the earlier gate, which compared two means on a handful of items):
- enough items: 4 held-out questions cannot see a 2-question change; below `min_items` nothing is promoted.
- paired: both versions answer the same items, and the decision is on the per-item differences.
- no ties at the floor: 0.000 vs 0.000 says nothing about the candidate; it is not a pass.
- the weak model's own output: a collapsed draft (every question gets the same answer) must fail even when
  the strong model hides it, so the drafts are scored alone and their variety is compared.
"""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import asdict, dataclass

from services.trainer.collab import CollabClient
from services.trainer.evaluators import metric_for
from shared.data.example import Example
from shared.metrics import bootstrap_ci, final_answer, normalize


@dataclass(frozen=True)
class GateRules:
    """Args:
    tolerance: promote when the candidate's mean is at least the active one's minus this (on a 0-1 metric).
    min_items: held-out items needed before any promotion.
    min_variety: the candidate's share of distinct draft answers must be at least this fraction of the
        active version's (1.0: as varied; 0.5: half as many distinct answers is a collapse).
    """

    tolerance: float = 0.0
    min_items: int = 20
    min_variety: float = 0.5


@dataclass
class Scored:
    """One version on one held-out item: the collaboration's score and the draft scored alone."""

    collab: float
    weak: float
    draft_answer: str


@dataclass
class GateDecision:
    passed: bool
    reason: str
    items: int
    candidate: float | None = None  # mean collaboration score
    active: float | None = None
    diff_ci: tuple[float, float] | None = None  # paired 95% bootstrap CI of candidate - active
    weak_candidate: float | None = None  # mean score of the drafts alone
    weak_active: float | None = None
    variety_candidate: float | None = None  # distinct draft answers / items
    variety_active: float | None = None

    def metrics(self) -> dict[str, float]:
        return {
            f"gate_{k}": float(v)
            for k, v in asdict(self).items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }


async def score_version(
    collab: CollabClient, domain: str, adapter: str | None, items: list[Example], concurrency: int
) -> list[Scored]:
    """The served collaboration (greedy draft with `adapter` -> strong) on every item, in item order."""
    sem = asyncio.Semaphore(concurrency)
    metric = metric_for(domain)

    async def one(item: Example) -> Scored:
        async with sem:
            draft, _, score = await collab.collaborate(item.question, domain, adapter, item.answers[0], item.context)
        return Scored(score, metric(draft, item.answers[0]), normalize(final_answer(draft)))

    return list(await asyncio.gather(*(one(i) for i in items)))


def variety(rows: list[Scored]) -> float:
    return len({r.draft_answer for r in rows}) / len(rows) if rows else 0.0


def decide(candidate: list[Scored], active: list[Scored], rules: GateRules) -> GateDecision:
    """Paired decision on the same items (candidate[i] and active[i] answer item i)."""
    n = len(candidate)
    if n != len(active):
        raise ValueError("the gate compares both versions on the same items")
    if n < rules.min_items:
        return GateDecision(False, f"{n} held-out items, need {rules.min_items} to judge a candidate", n)
    diffs = [c.collab - a.collab for c, a in zip(candidate, active, strict=True)]
    cand, act = statistics.fmean(c.collab for c in candidate), statistics.fmean(a.collab for a in active)
    weak_cand, weak_act = statistics.fmean(c.weak for c in candidate), statistics.fmean(a.weak for a in active)
    ci = bootstrap_ci(diffs)
    d = GateDecision(
        False,
        "",
        n,
        candidate=cand,
        active=act,
        diff_ci=ci,
        weak_candidate=weak_cand,
        weak_active=weak_act,
        variety_candidate=variety(candidate),
        variety_active=variety(active),
    )
    tol = rules.tolerance
    if cand == 0 and act == 0:
        d.reason = "both versions score 0 on every held-out item: no evidence for the candidate"
    elif cand < act - tol:
        d.reason = f"collaboration {cand:.3f} < active {act:.3f} - {tol} (paired diff CI [{ci[0]:+.3f}, {ci[1]:+.3f}])"
    elif weak_cand < weak_act - tol:
        d.reason = f"the weak model's own drafts got worse: {weak_cand:.3f} < {weak_act:.3f} - {tol}"
    elif variety(candidate) < rules.min_variety * variety(active):
        d.reason = (
            f"the drafts collapsed: {d.variety_candidate:.2f} distinct answers per item vs "
            f"{d.variety_active:.2f} for the active version"
        )
    else:
        d.passed = True
        d.reason = (
            f"gate passed: collaboration {cand:.3f} vs {act:.3f} on {n} items (paired diff CI "
            f"[{ci[0]:+.3f}, {ci[1]:+.3f}]), drafts {weak_cand:.3f} vs {weak_act:.3f}"
        )
    return d
