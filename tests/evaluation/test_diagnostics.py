"""Keep / fix / break and paired differences on hand-made rows, and the rows the harness writes for them."""

from __future__ import annotations

import pytest

from evaluation.diagnostics import facts_recalled, keep_fix_break, markdown, paired_diff
from evaluation.harness import same_answer
from shared.metrics import fact_recall


def row(i: int, draft_ok: bool, ok: bool, kind: str = "total", echo: bool = False) -> dict:
    return {"id": str(i), "kind": kind, "draft_correct": draft_ok, "correct": ok, "answer_is_draft": echo}


def test_keep_fix_break_counts_what_the_strong_model_did():
    rows = [
        row(1, True, True, echo=True),
        row(2, False, True),
        row(3, True, False),
        row(4, False, False),
        row(5, True, True, "compare"),
        {"id": "6", "error": "HTTP 503"},
    ]
    kfb = keep_fix_break(rows)
    assert (kfb.items, kfb.keep, kfb.fix, kfb.break_, kfb.both_wrong, kfb.echo) == (5, 2, 1, 1, 1, 1)
    assert keep_fix_break([{"id": "1", "correct": True}]) is None  # no draft scored (strong alone)


def test_paired_difference_uses_the_same_items():
    a = [{"id": str(i), "correct": i < 6} for i in range(10)]
    b = [{"id": str(i), "correct": i < 3} for i in range(10)] + [{"id": "extra", "correct": True}]
    d = paired_diff("a - b", a, b)
    assert d.items == 10 and d.mean == pytest.approx(0.3)
    assert 0 <= d.ci[0] <= 0.3 <= d.ci[1]  # no item got worse: the paired CI never goes below 0


def test_the_report_sections_name_each_comparison():
    weak = [{"id": str(i), "correct": i < 5} for i in range(10)]
    strong = [{"id": str(i), "correct": False} for i in range(10)]
    collab = [row(i, i < 5, i < 7, "total" if i % 2 else "compare") for i in range(10)]
    after = [row(i, i < 5, i < 8) for i in range(10)]
    text = "\n".join(
        markdown(
            "synthetic",
            [
                ("Weak", "weak", None, weak),
                ("Strong alone", "strong", None, strong),
                ("Strong + retrieval", "strong", None, strong),
                ("Collab", "collab", 0, collab),
                ("Round 1", "collab", 1, after),
            ],
        )
    )
    assert "| Collab | all | 10 | 50 | 20 | 0 | 30 | 0 | - |" in text and "| Collab | compare |" in text
    labels = ("Collab - weak alone", "Collab - Strong alone", "Collab - Strong + retrieval", "Round 1 - Collab")
    for label in (*labels, "Round 1 - weak alone"):
        assert f"| {label} |" in text


def test_a_checker_is_credited_for_drafts_that_had_every_fact_but_the_wrong_answer():
    rows = [row(i, False, i < 2) | {"needed_fact_recall": 1.0 if i < 3 else 0.5} for i in range(6)]
    kfb = keep_fix_break(rows)
    assert (kfb.facts_right_wrong, kfb.facts_right_fixed) == (3, 2) and kfb.row().endswith("| 2 of 3")


def test_an_answer_that_repeats_the_drafts_answer_is_an_echo():
    assert same_answer("Checked. Answer: 447 Euros.", "3 x 149 = 447. Answer: 447 euros")
    assert not same_answer("Answer: 450 euros", "Answer: 447 euros")


def test_fact_recall_counts_the_rationales_facts_the_question_does_not_give():
    question = "At Acme: which is heavier, the Selbar filter or the Gorzu valve?"
    rationale = (
        "The Selbar filter (KA-123) weighs 40 kg and is made in Barpexwick. "
        "The Gorzu valve weighs 45 kg. 40 kg vs 45 kg, so the Gorzu valve is heavier."
    )
    assert fact_recall(rationale, rationale, question) == 1.0
    assert (
        fact_recall("The Selbar filter weighs 40 kg; the Gorzu valve 45 kg.", rationale, question) == 0.5
    )  # not KA-123, Barpexwick
    assert fact_recall("The Selbar filter weighs 12 kg.", rationale, question) == 0.0  # a name from the question
    assert fact_recall("anything", "no numbers or names here.", question) is None
    rows = [
        {"id": "1", "kind": "compare", "fact_recall": 1.0},
        {"id": "2", "kind": "total", "fact_recall": 0.5},
        {"id": "3", "fact_recall": None},
        {"id": "4", "error": "x", "fact_recall": 1.0},
    ]
    fr = facts_recalled(rows)
    assert (fr.items, fr.recall, fr.complete) == (2, 0.75, 0.5)
    text = "\n".join(markdown("synthetic", [("Weak", "weak", None, rows)]))
    assert "| Weak | all | 2 | 75 | 50 |" in text and "| Weak | total | 1 | 50 | 0 |" in text


def test_the_headline_json_has_the_figures_later_runs_compare():
    from evaluation.headline import domain_headline

    def rows(mode, right, needed=None):
        return [
            {"id": f"q{i}", "domain": "synthetic", "mode": mode, "correct": i < right}
            | ({"needed_fact_recall": 1.0 if i < needed else 0.5} if needed is not None else {})
            for i in range(10)
        ]

    runs = [
        ("Weak", "weak", None, None, rows("weak", 4, needed=8)),
        ("Strong", "strong", None, None, rows("strong", 2)),
        ("Strong + retrieval", "strong", None, True, rows("strong", 5)),
        ("Collab", "collab", 0, None, rows("collab", 6)),
        ("After", "collab", 1, None, rows("collab", 7)),
    ]
    demo = {"knowledge": {"covered": [f"q{i}" for i in range(5)], "coverage": 0.5}}
    h = domain_headline(runs, demo)
    assert (h["n"], h["weak"], h["strong"], h["strong_retrieval"], h["collab"], h["after_dpo"]) == (
        10,
        40.0,
        20.0,
        50.0,
        60.0,
        70.0,
    )
    assert h["collab_minus_weak"][0] == 20.0 and h["after_dpo_minus_collab"][0] == 10.0
    assert (h["recall_complete"], h["recall_any"], h["coverage"], h["generated"]) == (100.0, 80.0, 50.0, True)
    assert h["default_mode"] == "collab" and h["oracle"] is None
