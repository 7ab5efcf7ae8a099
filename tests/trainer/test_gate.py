"""The promotion gate's decision on fixed per-item scores: each rule can reject, ties at the floor are not
a pass, and DPO is sized from the pairs it has."""

from __future__ import annotations

from services.trainer.gate import GateRules, Scored, decide
from services.trainer.rounds import dpo_steps

RULES = GateRules(tolerance=0.0, min_items=4, min_variety=0.5)


def rows(collab: list[float], weak: list[float] | None = None, answers: list[str] | None = None) -> list[Scored]:
    weak = weak if weak is not None else collab
    answers = answers or [f"answer {i}" for i in range(len(collab))]
    return [Scored(c, w, a) for c, w, a in zip(collab, weak, answers, strict=True)]


def test_an_equal_or_better_candidate_passes():
    d = decide(rows([1, 1, 0, 1]), rows([1, 0, 0, 1]), RULES)
    assert d.passed and d.candidate == 0.75 and d.active == 0.5 and d.items == 4
    assert d.diff_ci[0] <= 0.25 <= d.diff_ci[1]
    assert set(d.metrics()) >= {"gate_candidate", "gate_active", "gate_items", "gate_weak_candidate"}


def test_a_worse_collaboration_is_rejected():
    d = decide(rows([1, 0, 0, 1]), rows([1, 1, 0, 1]), RULES)
    assert not d.passed and "collaboration" in d.reason
    assert decide(rows([1, 0, 0, 1]), rows([1, 1, 0, 1]), GateRules(tolerance=0.75, min_items=4)).passed


def test_a_slightly_worse_candidate_is_rejected_on_the_paired_ci_as_shipped():
    """Worse on 2 of 40 items, the same elsewhere (varied answers, no collapse): its mean is within the shipped
    tolerance (0.05), so a rule on the means would promote it; the paired CI reaches further down and rejects it."""
    shipped = GateRules()
    active = [1.0] * 30 + [0.0] * 10
    candidate = [0.0, 0.0] + active[2:]
    d = decide(rows(candidate), rows(active), shipped)
    assert d.candidate >= d.active - shipped.tolerance  # the means alone would pass it
    assert not d.passed and "CI" in d.reason and d.diff_ci[0] < -shipped.tolerance
    assert d.metrics()["gate_diff_ci_low"] == d.diff_ci[0]


def test_many_items_differing_both_ways_pass_as_shipped():
    """200 items, 2 better and 2 worse: no evidence of harm, and the CI is narrow enough to show it."""
    active = [1.0] * 100 + [0.0] * 100
    candidate = [0.0, 0.0, *active[2:100], 1.0, 1.0, *active[102:]]
    d = decide(rows(candidate), rows(active), GateRules())
    assert d.passed, d.reason
    assert d.diff_ci[0] >= -0.05


def test_too_few_items_decide_nothing():
    d = decide(rows([1, 1, 1]), rows([0, 0, 0]), RULES)
    assert not d.passed and "need 4" in d.reason


def test_ties_at_the_floor_are_not_a_pass():
    d = decide(rows([0, 0, 0, 0]), rows([0, 0, 0, 0]), RULES)
    assert not d.passed and "score 0" in d.reason


def test_worse_drafts_fail_even_when_the_strong_model_hides_them():
    d = decide(rows([1, 1, 1, 1], weak=[0, 0, 0, 0]), rows([1, 1, 1, 1], weak=[1, 1, 0, 0]), RULES)
    assert not d.passed and "drafts may have got worse" in d.reason


def test_a_collapsed_draft_fails():
    same = ["12 mg/kg every 6 hours"] * 4
    d = decide(rows([1, 1, 1, 1], answers=same), rows([1, 1, 1, 1]), RULES)
    assert not d.passed and "collapsed" in d.reason and d.variety_candidate == 0.25


def test_dpo_steps_follow_the_pairs():
    assert dpo_steps(pairs=2, epochs=2, batch_size=4, max_steps=10) == 1
    assert dpo_steps(pairs=40, epochs=2, batch_size=4, max_steps=200) == 20
    assert dpo_steps(pairs=4000, epochs=2, batch_size=4, max_steps=200) == 200
