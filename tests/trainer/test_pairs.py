"""Collaborative feedback on fixed drafts and scores: exact Δ and the pairing rules; the metrics."""

from __future__ import annotations

import pytest

from services.trainer.evaluators import exact_match, final_answer, parse_judge_score, token_f1
from services.trainer.pairs import ScoredDraft, deltas, select_pairs
from shared.domains import Metric


def drafts(*scores: float) -> list[ScoredDraft]:
    return [ScoredDraft(f"draft {i}", f"refined {i}", s) for i, s in enumerate(scores)]


def test_delta_is_refined_score_minus_strong_alone():
    assert deltas(drafts(1.0, 0.5, 0.25), strong_alone=0.5) == [0.5, 0.0, -0.25]


def test_best_chosen_pairs_with_worst_rejected():
    [(chosen, rejected, dc, dr)] = select_pairs(drafts(0.6, 1.0, 0.5, 0.0), strong_alone=0.5)
    assert (chosen.draft, rejected.draft, dc, dr) == ("draft 1", "draft 3", 0.5, -0.5)


def test_delta_zero_is_rejected_not_chosen():
    assert select_pairs(drafts(0.5, 0.5), strong_alone=0.5) == []  # no draft helped: no pair
    [(c, r, dc, dr)] = select_pairs(drafts(0.75, 0.5), strong_alone=0.5)
    assert (c.draft, r.draft, dr) == ("draft 0", "draft 1", 0.0)


def test_no_pair_without_both_sides():
    assert select_pairs(drafts(0.9, 0.8), strong_alone=0.1) == []
    assert select_pairs(drafts(0.1, 0.0), strong_alone=0.5) == []


def test_margin_and_cap():
    many = drafts(1.0, 0.9, 0.45, 0.0, 0.3)
    assert len(select_pairs(many, strong_alone=0.5, max_pairs=1)) == 1
    two = select_pairs(many, strong_alone=0.5, max_pairs=3)
    assert [(c.draft, r.draft) for c, r, *_ in two] == [("draft 0", "draft 3"), ("draft 1", "draft 4")]
    # margin: 0.9-0.5=0.4 vs 0.3-0.5=-0.2 -> 0.6 < 0.7, so only the first pair survives
    assert len(select_pairs(many, strong_alone=0.5, margin=0.7, max_pairs=3)) == 1
    assert select_pairs(many, strong_alone=0.5, margin=1.5, max_pairs=3) == []


def test_identical_drafts_never_make_a_pair():
    same = [ScoredDraft("same", "a", 1.0), ScoredDraft("same", "b", 0.0)]
    assert select_pairs(same, strong_alone=0.5) == []


@pytest.mark.parametrize(
    "pred,ref,em,f1",
    [
        ("The Eiffel Tower.", "eiffel tower", 1.0, 1.0),
        ("Reasoning...\nAnswer: Paris, France", "Paris", 0.0, 2 / 3),
        ("no idea", "Paris", 0.0, 0.0),
        ("", "", 1.0, 1.0),
    ],
)
def test_exact_match_and_f1(pred, ref, em, f1):
    assert exact_match(pred, ref) == em
    assert token_f1(pred, ref) == pytest.approx(f1)


def test_label_match_takes_the_first_label_in_the_answer():
    yes_no = Metric(type="labels", labels=["yes", "no", "maybe"]).score
    assert yes_no("Answer: Yes, because ...", "yes") == 1.0
    assert yes_no("Answer: no; yes would be wrong", "yes") == 0.0
    assert yes_no("unclear", "maybe") == 0.0
    assert final_answer("a\nAnswer: x\nAnswer: y") == "y"


def test_judge_score_parsing():
    assert parse_judge_score("8") == 0.8 and parse_judge_score("Score: 7.5/10") == 0.75
    assert parse_judge_score("fifteen") == 0.0 and parse_judge_score("42") == 1.0
