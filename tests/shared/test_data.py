"""Loaders on the shared dataset files and the synthetic generator."""

from __future__ import annotations

import pytest

from shared.data import datasets_dir, load, load_jsonl, write_jsonl
from shared.data.synthetic import generate
from shared.metrics import normalize

needs_data = pytest.mark.skipif(
    not (datasets_dir() / "ifqa").exists(), reason="no offline dataset copies (COWEST_DATASETS_DIR)"
)


@needs_data
@pytest.mark.parametrize(
    "domain,train,eval_",
    [("ifqa", 2400, 691), ("pubmedqa", 500, 500), ("ethics", 1477, 632), ("ethics-deontology", 18164, 3596)],
)
def test_counts_and_no_overlap(domain, train, eval_):
    tr, ev = load(domain, "train"), load(domain, "eval")
    assert (len(tr), len(ev)) == (train, eval_)
    assert not {e.id for e in tr} & {e.id for e in ev}
    assert not {normalize(e.question) + (e.context or "")[:50] for e in tr} & {
        normalize(e.question) + (e.context or "")[:50] for e in ev
    }
    assert load(domain, "eval") == ev  # deterministic


@needs_data
def test_ifqa_drops_eval_questions_that_are_in_train():
    train_questions = {normalize(e.question) for e in load("ifqa", "train")}
    assert all(normalize(e.question) not in train_questions for e in load("ifqa", "eval"))


@needs_data
def test_pubmedqa_never_shows_the_long_answer_in_evaluation():
    evaluation = load("pubmedqa", "eval")
    assert all(e.rationale is None for e in evaluation)
    assert {e.answer for e in evaluation} == {"yes", "no", "maybe"}
    assert sum(e.rationale is not None for e in load("pubmedqa", "train")) > 400  # train may learn from it


def test_synthetic_is_deterministic_per_seed_and_differs_across_seeds():
    a, b, c = generate(seed=1, size=60), generate(seed=1, size=60), generate(seed=2, size=60)
    assert a == b
    assert a["eval"][0].question != c["eval"][0].question
    assert {e.question for e in a["train"]} & {e.question for e in a["eval"]} == set()
    bigger = generate(seed=1, size=400)
    assert len(bigger["train"]) + len(bigger["eval"]) > 3 * (len(a["train"]) + len(a["eval"]))


def test_synthetic_eval_facts_are_taught_in_train():
    data = generate(seed=3, size=80)
    train_text = " ".join(e.rationale for e in data["train"])
    for example in data["eval"]:
        first_fact = example.rationale.split(". ")[0]
        assert first_fact in train_text, example.question
    assert all(e.rationale and e.answer for e in data["eval"])


def test_jsonl_round_trip_and_errors(tmp_path):
    items = generate(seed=0, size=20)["eval"]
    write_jsonl(tmp_path / "d.jsonl", items)
    assert load_jsonl(tmp_path / "d.jsonl") == items
    assert load_jsonl(tmp_path / "d.jsonl", domain="mine")[0].domain == "mine"
    with pytest.raises(ValueError, match="unknown domain"):
        load("nope")
    with pytest.raises(ValueError, match="split"):
        load("synthetic", "dev")


def test_a_public_dataset_name_fails_clearly_when_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="offline .* JSONL"):
        load("hf:squad", "eval")


def test_synthetic_eval_size_adds_new_questions_about_the_same_facts():
    small, large = generate(seed=2, size=80), generate(seed=2, size=80, eval_size=50)
    assert [e.id for e in small["train"]] == [e.id for e in large["train"]]  # same company, same training data
    assert len(large["eval"]) == 50 and [e.id for e in large["eval"]][: len(small["eval"])] == [
        e.id for e in small["eval"]
    ]
    questions = [e.question for e in large["eval"]]
    assert len(set(questions)) == 50 and not set(questions) & {e.question for e in large["train"]}
