"""Evaluation harness pieces that need no server: per-item scoring, run summaries with CIs, the report
(markdown in the paper's format + PNGs), and the demo's data selection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation.demo import DemoConfig, load_domain, traffic_items
from evaluation.harness import EvalRun, latest, read_results, run_paths, score_answer
from evaluation.report import summarize, write_report
from shared.data.example import Example


def ex(answer, choices=None, domain="ifqa") -> Example:
    return Example(id="x", domain=domain, question="q?", answer=answer, choices=choices)


def test_label_scoring_reads_the_answer_line_and_ignores_case():
    e = ex("yes", ["yes", "no", "maybe"], "pubmedqa")
    assert score_answer(e, "The data suggest no effect.\nAnswer: Yes.") == {
        "score": 1.0,
        "label": "yes",
        "correct": True,
    }
    assert score_answer(e, "Answer: maybe") == {"score": 0.0, "label": "maybe", "correct": False}
    assert score_answer(e, "I cannot tell")["label"] is None


def test_free_form_scoring_takes_the_best_reference():
    s = score_answer(ex(["the Rhine", "Rhine river"]), "reasoning...\nAnswer: Rhine river")
    assert s["em"] == 1.0 and s["f1"] == 1.0 and s["correct"]
    s = score_answer(ex("340 euros", domain="synthetic"), "Answer: 340")
    assert s["em"] == 0.0 and s["f1"] == pytest.approx(2 / 3) and not s["correct"]  # correct = the metric's full marks


def test_summary_counts_errors_as_wrong_and_computes_macro_f1_with_an_absent_class():
    rows = [
        {"id": "1", "gold": "yes", "label": "yes", "correct": True, "strong_tokens": {"prompt": 10, "completion": 2}},
        {"id": "2", "gold": "no", "label": "yes", "correct": False, "strong_tokens": {"prompt": 10, "completion": 2}},
        {"id": "3", "gold": "no", "error": "HTTP 503"},
    ]
    s = summarize(rows, {"domain": "pubmedqa", "label": "Strong alone", "mode": "strong"})
    assert (s.items, s.errors, s.correct) == (3, 1, 1)
    assert s.metric("Acc").value == pytest.approx(1 / 3)
    # yes: tp 1, fp 1, fn 0 -> F1 2/3; no: tp 0 -> 0; maybe occurs nowhere -> not counted
    assert s.metric("Macro-F1").value == pytest.approx(1 / 3)
    lo, hi = s.metric("Acc").ci
    assert 0.0 <= lo <= 1 / 3 <= hi <= 1.0
    assert s.strong_tokens_per_correct == 24


def _write_run(eval_dir: Path, run: EvalRun, rows: list[dict], created: float) -> None:
    results, meta = run_paths(eval_dir, run)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta.write_text(
        json.dumps(
            {
                "domain": run.domain,
                "mode": run.mode,
                "adapter": run.adapter,
                "label": run.label,
                "round": run.round,
                "created": created,
                "wall_s": 1.0,
            }
        )
    )


def test_report_has_the_paper_table_cost_view_rounds_and_plots(tmp_path):
    eval_dir = tmp_path / "eval"
    for i, (mode, label, rnd, f1) in enumerate(
        [
            ("weak", "Weak alone (SFT)", None, 0.2),
            ("strong", "Strong alone", None, 0.5),
            ("collab", "Collaboration (SFT adapter, before DPO)", 0, 0.6),
            ("collab", "CoWest after DPO round 1", 1, 0.7),
        ]
    ):
        rows = [
            {
                "id": str(n),
                "gold": "a",
                "em": float(n < round(10 * f1)),
                "f1": f1,
                "strong_tokens": {"prompt": 50, "completion": 5} if mode != "weak" else {},
            }
            for n in range(10)
        ]
        _write_run(
            eval_dir, EvalRun("synthetic", mode, adapter=f"synthetic-v{i}", label=label, round=rnd), rows, created=i
        )
    (eval_dir / "synthetic" / "training.json").write_text(
        json.dumps(
            [
                {
                    "demo_round": 1,
                    "status": "promoted",
                    "detail": "gate passed",
                    "pairs": 9,
                    "candidate": "synthetic-v2",
                    "candidate_score": 0.7,
                    "active_score": 0.6,
                    "train": {
                        "steps": 3,
                        "seconds_per_step": 1.0,
                        "loss": [0.69, 0.6, 0.5],
                        "reward_margin": [0.0, 0.1, 0.3],
                    },
                },
                {
                    "demo_round": 2,
                    "status": "failed",
                    "detail": "RuntimeError: dpo job failed:\nline | two\n",
                    "pairs": 6,
                },
            ]
        )
    )
    (eval_dir / "synthetic" / "demo.json").write_text(
        json.dumps(
            {
                "command": "cowest demo",
                "phases": [{"phase": "SFT", "seconds": 12.0}, {"phase": "eval", "seconds": 3.0}],
            }
        )
    )
    out, summaries = write_report(eval_dir, tmp_path / "report" / "quality.md")
    text = out.read_text()
    table = text.split("## Cost")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| Method | Synthetic company EM (n=10) | Synthetic company F1 (n=10)")
    assert [r.split(" | ")[0] for r in rows[1:]] == [
        "| Weak alone (SFT)",
        "| Strong alone",
        "| Collaboration (SFT adapter, before DPO)",
        "| CoWest after DPO round 1",
    ]
    assert "| CoWest after DPO round 1 | 70.0 [" in table and "| 70.0 [70.0, 70.0] |" in table
    assert "| synthetic | Collaboration (SFT adapter, before DPO) | 10 | 0 | 0 | 0 | 55 | 92 | 0.83x | 1 |" in text
    assert (
        "| 1 | promoted: gate passed | - | 9 | 3 | 1.000 | 0.690 | 0.500 | 0.300 | 0.700 vs 0.600 | synthetic-v2 |"
        in text
    )
    assert (
        "| 2 | failed: RuntimeError: dpo job failed: line / two | - | 6 | - |" in text
    )  # one row, however long the error
    assert "| **total** | **15** |" in text
    for png in ("quality-metrics.png", "quality-dpo_training.png", "quality-rounds.png"):
        assert (out.parent / png).read_bytes()[:4] == b"\x89PNG" and f"]({png})" in text


def test_results_resume_keeps_the_last_row_per_item_and_skips_a_torn_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": "1", "error": "HTTP 503"}\n{"id": "2", "f1": 1}\n{"id": "1", "f1": 0.5}\n{"id": "3", "f1')
    rows = latest(read_results(path))
    assert sorted((r["id"], r.get("f1")) for r in rows) == [("1", 0.5), ("2", 1)]


def test_demo_data_never_scores_training_questions_and_replays_real_questions(tmp_path):
    train, evaluation = load_domain(DemoConfig(domain="synthetic", seed=3, size=60))
    assert train and evaluation and not {e.question for e in train} & {e.question for e in evaluation}
    traffic = traffic_items(train, DemoConfig(seed=3, traffic_limit=10))
    assert len(traffic) == 10 and all("-fact-" not in e.id for e in traffic)
    # Any domain as JSONL: the directory's train/eval files, rows in the harness schema.
    d = tmp_path / "acme"
    d.mkdir()
    (d / "train.jsonl").write_text('{"question": "a?", "answer": "x"}\n{"question": "b?", "answer": "y"}\n')
    (d / "eval.jsonl").write_text('{"question": "b?", "answer": "y"}\n{"question": "c?", "answer": "z"}\n')
    train, evaluation = load_domain(DemoConfig(domain="acme", domain_dir=d))
    assert [e.domain for e in train] == ["acme", "acme"] and [e.question for e in evaluation] == ["c?"]


def test_demo_cli_help_states_demo_config_defaults():
    """The CLI leaves sizes unset so DemoConfig decides; its help must quote DemoConfig's values."""
    import inspect
    import re

    from cowest.cli.evaluation import demo

    fields = {"traffic": "traffic_limit"}
    for name, param in inspect.signature(demo).parameters.items():
        match = re.search(r"\[default: ([\w.]+)\]", param.default.help or "")
        if match:
            assert param.default.default is None, name
            assert str(getattr(DemoConfig, fields.get(name, name))) == match.group(1), name


def test_a_contains_metric_counts_full_marks_as_correct_not_exact_match():
    # "The capital is Paris." scores 1 on the general domain's contains metric but 0 on EM; an old result file
    # (no "correct" by score) counts the same way, and a partial F1 is never correct.
    rows = [
        {"id": "1", "gold": "Paris", "score": 1.0, "em": 0.0, "f1": 0.4, "correct": False},
        {"id": "2", "gold": "Rome", "score": 0.5, "em": 0.0, "f1": 0.5},
        {"id": "3", "gold": "Oslo", "error": "HTTP 503"},
    ]
    s = summarize(rows, {"domain": "general", "label": "Strong alone", "mode": "strong"})
    assert s.correct == 1 and s.metric("Correct").value == pytest.approx(1 / 3)
    assert [r["correct"] for r in rows] == [True, False, False]  # what keep/fix/break reads
    synthetic = summarize([dict(r) for r in rows[:2]], {"domain": "synthetic", "label": "x", "mode": "strong"})
    assert synthetic.metric("Correct") is None  # EM-style domains keep EM and F1 only
