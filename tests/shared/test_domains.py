"""Domains as data: the built-in specs, validation with messages that say what is wrong, every metric type,
the prompts a spec produces (task, Work line, demonstrations), and a domain directory's spec."""

from __future__ import annotations

import json

import pytest

from evaluation.demo import DemoConfig, load_spec
from services.trainer.evaluators import metric_for
from shared import domains
from shared.collaboration import Ask, Collaboration, Limits
from shared.data.example import Example
from shared.domains import DomainSpec, Metric, SpecError, parse_spec
from shared.prompts import strong_alone_messages, strong_messages, weak_messages

SPEC = {
    "task": "Answer questions about Acme's parts catalogue.",
    "answer_format": "a part name",
    "metric": {"type": "exact_match"},
    "work_line": True,
    "demonstrations": [
        {
            "question": "Which part is code 7?",
            "draft": "Code 7 is the hinge.\nAnswer: hinge",
            "work": "the catalogue lists code 7 as the hinge",
            "answer": "hinge",
        }
    ],
}


@pytest.fixture
def acme():
    spec = parse_spec(dict(SPEC), name="acme")
    domains.register_local(spec)
    yield spec
    domains._registered.pop("acme", None)


def test_builtin_domains_are_specs_in_the_same_format():
    assert set(domains.BUILTIN) == {
        "general",
        "ifqa",
        "pubmedqa",
        "ethics",
        "ethics-deontology",
        "synthetic",
        "islands",
    }
    for name, spec in domains.BUILTIN.items():
        assert parse_spec(json.loads(spec.model_dump_json()), name=name) == spec
    assert domains.get("pubmedqa").metric.labels == ["yes", "no", "maybe"]
    assert domains.get("synthetic").work_line and len(domains.get("synthetic").demonstrations) == 1


@pytest.mark.parametrize(
    "change, message",
    [
        ({"metric": {"type": "labels"}}, "labels"),
        ({"metric": {"type": "f1", "labels": ["a", "b"]}}, "labels"),
        ({"metric": {"type": "labels", "labels": ["Yes", "yes."]}}, "differ"),
        ({"metric": {"type": "bleu"}}, "metric.type"),
        ({"metric": {"type": "number", "tolerance": -1}}, "tolerance"),
        ({"task": ""}, "task"),
        ({"prompt": "extra"}, "prompt"),
        ({"answer_line": False}, "work_line"),
        ({"demonstrations": [{"question": "q"}]}, "demonstrations.0.draft"),
        ({"name": "Bad Name"}, "name"),
    ],
)
def test_a_malformed_spec_is_refused_with_where_and_why(change, message):
    with pytest.raises(SpecError, match=message):
        parse_spec({"name": "acme", **SPEC, **change})


def test_the_name_given_by_a_url_or_directory_must_match_the_spec():
    assert parse_spec(dict(SPEC), name="acme").name == "acme"
    with pytest.raises(SpecError, match="registered as"):
        parse_spec({**SPEC, "name": "other"}, name="acme")
    with pytest.raises(SpecError, match="object"):
        parse_spec(["not", "an", "object"])
    with pytest.raises(SpecError, match="built-in"):
        domains.register_local(parse_spec(dict(SPEC), name="synthetic"))


@pytest.mark.parametrize(
    "metric, prediction, reference, score",
    [
        ({"type": "exact_match"}, "Work: x\nAnswer: The Hinge.", "hinge", 1.0),
        ({"type": "exact_match"}, "Answer: hinge pin", "hinge", 0.0),
        ({"type": "f1"}, "Answer: hinge pin", "hinge", 2 / 3),
        ({"type": "exact_match_or_f1"}, "Answer: hinge", "hinge", 1.0),
        ({"type": "contains_or_f1"}, "It is the hinge, I think.", "hinge", 1.0),
        ({"type": "contains_or_f1"}, "Answer: 120", "12", 0.0),  # whole words only
        ({"type": "labels", "labels": ["safe", "unsafe"]}, "Answer: Unsafe, clearly.", "unsafe", 1.0),
        ({"type": "labels", "labels": ["safe", "unsafe"]}, "Answer: safe or unsafe", "unsafe", 0.0),
        ({"type": "number", "tolerance": 0.5}, "Work: 2 x 1,000\nAnswer: 2,000.4 euros", "2000 euros", 1.0),
        ({"type": "number", "tolerance": 0.5}, "Answer: 2001 euros", "2000", 0.0),
        ({"type": "number"}, "Answer: none", "2000", 0.0),
    ],
)
def test_every_metric_type(metric, prediction, reference, score):
    assert Metric(**metric).score(prediction, reference) == pytest.approx(score)


def test_the_trainer_and_the_harness_score_with_the_domains_metric(acme):
    assert metric_for("acme")("Answer: hinge pin", "hinge") == 0.0  # exact match, as the spec says
    assert metric_for("pubmedqa")("Answer: maybe", "maybe") == 1.0
    assert metric_for("never-registered")("it is the hinge", "hinge") == 1.0  # the general metric
    assert acme.score("Answer: pin", ["hinge", "pin"]) == 1.0  # best of the acceptable answers


def test_prompts_say_the_task_show_the_demonstrations_and_ask_for_the_work_line(acme):
    weak = weak_messages("Which part is code 9?", "acme")
    assert len(weak) == 1 and weak[0]["content"].startswith(SPEC["task"])  # the weak model sees no demonstration
    with_draft = strong_messages("Which part is code 9?", "Code 9 is the latch.\nAnswer: latch", "acme")
    assert [m["role"] for m in with_draft] == ["user", "assistant", "user"]
    assert "Code 7 is the hinge." in with_draft[0]["content"] and "Which part is code 9?" in with_draft[2]["content"]
    assert with_draft[1]["content"] == "Work: the catalogue lists code 7 as the hinge\nAnswer: hinge"
    assert "'Work:" in with_draft[2]["content"] and "a part name" in with_draft[2]["content"]
    alone = strong_alone_messages("Which part is code 9?", "acme")
    assert [m["role"] for m in alone] == ["user", "assistant", "user"] and "hinge.\nAnswer" not in alone[0]["content"]
    # A chat's earlier turns come after the demonstrations, right before the question.
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert strong_messages("q", "d", "acme", history=history)[2:4] == history
    # Domains without a Work line keep the answer-line instruction; general has neither.
    assert "'Work:" not in strong_messages("q", "d", "pubmedqa")[-1]["content"]
    assert "Answer:" not in strong_alone_messages("q", "general")[-1]["content"]


def test_the_collaboration_sends_the_specs_prompts(acme):
    collab = Collaboration(None, None, "weak", "strong", Limits())
    payload = collab.strong_payload(Ask("Which part is code 9?", "acme"), "Code 9 is the latch.")
    assert payload["messages"] == strong_messages("Which part is code 9?", "Code 9 is the latch.", "acme")


def test_a_domain_directory_spec_json_or_yaml(tmp_path):
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "spec.yaml").write_text(
        "task: Answer questions about Acme's parts catalogue.\nanswer_format: a part name\n"
        "metric:\n  type: number\n  tolerance: 1\n"
    )
    spec = domains.read_dir_spec(tmp_path / "acme", name="acme")
    assert spec.name == "acme" and spec.metric.tolerance == 1
    assert domains.read_dir_spec(tmp_path) is None
    (tmp_path / "acme" / "spec.yaml").write_text("task: [unclosed")
    with pytest.raises(SpecError, match="spec.yaml: cannot read"):
        domains.read_dir_spec(tmp_path / "acme", name="acme")


def test_a_demonstration_that_is_an_evaluation_question_is_a_leak(tmp_path):
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "spec.json").write_text(json.dumps(SPEC))
    cfg = DemoConfig(domain="acme", domain_dir=tmp_path / "acme")
    fresh = Example(id="e1", domain="acme", question="Which part is code 8?", answer="bolt")
    assert load_spec(cfg, [fresh]) == parse_spec(dict(SPEC), name="acme")
    leaked = Example(id="e2", domain="acme", question="which part is code 7", answer="hinge")
    with pytest.raises(ValueError, match="train split"):
        load_spec(cfg, [fresh, leaked])


def test_spec_round_trips_through_its_json():
    spec = DomainSpec(name="x", task="t", answer_format="f")
    assert parse_spec(json.loads(spec.model_dump_json(exclude_none=True)), name="x") == spec


def test_a_spec_whose_demonstrations_all_copy_their_drafts_is_warned_about(caplog):
    with caplog.at_level("WARNING", logger="shared.domains"):
        spec = parse_spec(dict(SPEC), name="acme")  # its one example answers "hinge", as its draft did
    assert spec.demonstrations_copy_drafts and "show a corrected draft" in caplog.text
    caplog.clear()
    corrected = dict(SPEC, demonstrations=[dict(SPEC["demonstrations"][0], answer="latch")])
    with caplog.at_level("WARNING", logger="shared.domains"):
        assert not parse_spec(corrected, name="acme").demonstrations_copy_drafts
    assert "corrected draft" not in caplog.text
    for name in ("islands", "synthetic"):  # the built-in generated domains show corrected drafts
        assert not domains.get(name).demonstrations_copy_drafts, name
