"""The promotion gate: a candidate adapter replaces the active one only when held-out evidence says it is
no worse, for the collaboration users get and for the weak model's own drafts.

Why each rule (all measured failures of the earlier gate, which compared two means on a handful of items):
- enough items: 4 held-out questions cannot see a 2-question change; below `min_items` nothing is promoted.
- paired: both versions answer the same items, and the decision is on the per-item differences.
- non-inferiority on the evidence, not the point estimate: a candidate one item worse in 40 has a mean within
  any small tolerance, yet nothing shows it is not worse. The candidate passes only when the paired 95% bootstrap
  CI of (candidate - active) lies above -tolerance, so few items must agree nearly everywhere and many items may
  differ both ways.
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
    tolerance: the non-inferiority margin (on a 0-1 metric): promote only when the lower end of the paired 95% CI
        of candidate - active is at least -tolerance, for the collaboration and for the drafts alone.
    min_items: held-out items needed before any promotion.
    min_variety: the candidate's share of distinct draft answers must be at least this fraction of the
        active version's (1.0: as varied; 0.5: half as many distinct answers is a collapse).
    """

    tolerance: float = 0.05
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
    weak_diff_ci: tuple[float, float] | None = None  # the same CI for the drafts scored alone
    variety_candidate: float | None = None  # distinct draft answers / items
    variety_active: float | None = None

    def metrics(self) -> dict[str, float]:
        out = {
            f"gate_{k}": float(v)
            for k, v in asdict(self).items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        for name in ("diff_ci", "weak_diff_ci"):  # the manifest's metrics are numbers: the CI as its two ends
            if (ci := getattr(self, name)) is not None:
                out[f"gate_{name}_low"], out[f"gate_{name}_high"] = float(ci[0]), float(ci[1])
        return out


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
    weak_ci = bootstrap_ci([c.weak - a.weak for c, a in zip(candidate, active, strict=True)])
    d = GateDecision(
        False,
        "",
        n,
        candidate=cand,
        active=act,
        diff_ci=ci,
        weak_candidate=weak_cand,
        weak_active=weak_act,
        weak_diff_ci=weak_ci,
        variety_candidate=variety(candidate),
        variety_active=variety(active),
    )
    tol = rules.tolerance
    if cand == 0 and act == 0:
        d.reason = "both versions score 0 on every held-out item: no evidence for the candidate"
    elif ci[0] < -tol:
        d.reason = (
            f"collaboration {cand:.3f} vs active {act:.3f}: the paired diff CI [{ci[0]:+.3f}, {ci[1]:+.3f}] "
            f"reaches below -{tol} (not shown to be no worse)"
        )
    elif weak_ci[0] < -tol:
        d.reason = (
            f"the weak model's own drafts may have got worse: {weak_cand:.3f} vs {weak_act:.3f}, paired diff CI "
            f"[{weak_ci[0]:+.3f}, {weak_ci[1]:+.3f}] reaches below -{tol}"
        )
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
