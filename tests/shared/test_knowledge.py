"""A domain's knowledge: where it comes from, what the lookup returns, how it is versioned in Redis."""

from __future__ import annotations

import json

import pytest

from shared import redis_keys
from shared.data.synthetic import generate, true_facts
from shared.knowledge import (
    FactIndex,
    Knowledge,
    KnowledgeCache,
    Lookup,
    derive_facts,
    domain_knowledge,
    publish,
    question_entities,
    read_knowledge,
    sentences,
    states_fact,
)
from shared.prompts import strong_alone_messages, weak_messages


@pytest.fixture(scope="module")
def company():
    return generate(seed=0, size=240, eval_size=100)


def test_derived_statements_are_exactly_the_companys_facts(company):
    """Measured where the truth is known: every card and the policy, and nothing that computes or concludes."""
    derived = set(derive_facts([e.model_dump() for e in company["train"]]))
    assert derived == true_facts(seed=0, size=240)


@pytest.mark.parametrize(
    "sentence, fact",
    [
        ("The Filo motor (VR-441) costs 242 euros and weighs 24 kg.", True),
        ("Acme policy: orders of 20 units or more get 15% off.", True),
        ("24 kg vs 44 kg, so the Filo motor is heavier.", False),
        ("3 x 40 = 120 euros; no discount.", False),
        ("It is made in Kaloburg, whose manager is Ilse Varga.", False),  # leans on an earlier sentence
        ("Therefore the answer is yes.", False),
        ("ok then.", False),
    ],
)
def test_states_fact(sentence, fact):
    assert states_fact(sentence) is fact


def test_sentences_keep_decimals_and_codes_whole():
    assert sentences("The KA-2.5 valve weighs 3.5 kg. It is blue.") == [
        "The KA-2.5 valve weighs 3.5 kg.",
        "It is blue.",
    ]


def test_a_domain_brings_knowledge_as_jsonl_or_a_folder(tmp_path):
    (tmp_path / "knowledge.jsonl").write_text(
        json.dumps("The Orla reservoir holds 120 ML.") + "\n\n" + json.dumps({"text": "Vantor is in Zeel."}) + "\n"
    )
    got = domain_knowledge(tmp_path, [{"rationale": "The Kip gauge costs 3 euros."}])
    assert got.source == "file" and got.facts == ("The Orla reservoir holds 120 ML.", "Vantor is in Zeel.")
    folder = tmp_path / "other" / "knowledge"
    folder.mkdir(parents=True)
    (folder / "a.md").write_text("# Plants\n\nThe Zeel plant opened in 1999.\n\nIt has 40 staff.\n")
    (folder / "b.txt").write_text("The Zeel plant opened in 1999.\n")  # the same statement twice: kept once
    assert read_knowledge(folder.parent) == ["Plants", "The Zeel plant opened in 1999.", "It has 40 staff."]
    (tmp_path / "knowledge.jsonl").write_text('{"fact": 3}\n')
    with pytest.raises(ValueError, match="knowledge.jsonl:1"):
        read_knowledge(tmp_path)


def test_without_a_knowledge_file_the_train_split_is_used(tmp_path):
    got = domain_knowledge(tmp_path, [{"rationale": "The Kip gauge costs 3 euros. 3 x 2 = 6 euros."}])
    assert got.source == "derived" and got.facts == ("The Kip gauge costs 3 euros.",)


def test_the_lookup_returns_every_needed_fact_for_new_questions(company):
    """The synthetic company's 100 evaluation questions (not in train): their card(s) and the policy are in the
    three statements the lookup returns."""
    truth = true_facts(seed=0, size=240)
    index = FactIndex(Knowledge(tuple(derive_facts([e.model_dump() for e in company["train"]]))))
    hits = 0
    for e in company["eval"]:
        needed = [s for s in sentences(e.rationale) if s in truth]
        found = index.search(e.question, 3)
        hits += all(s in found.facts for s in needed) and not found.missing
    assert hits == len(company["eval"]) == 100


def test_an_unknown_name_is_reported_missing_not_matched_to_another_items_fact():
    index = FactIndex(
        Knowledge(("The Orla reservoir holds 120 ML and loses 4% a week.", "The Zeel reservoir holds 80 ML."))
    )
    got = index.search("How long does the Brask reservoir last?", 3)
    assert got.missing == ["brask"]
    assert question_entities("At Acme Ltd: what does the Orla pump cost?") == ["orla", "acme", "ltd"]
    ranked = index.search("How much does the Zeel reservoir hold?", 1)
    assert ranked.facts == ["The Zeel reservoir holds 80 ML."] and not ranked.missing


def test_prompts_carry_the_lookup_and_say_what_is_missing():
    lookup = Lookup(["The Zeel reservoir holds 80 ML."], ["brask"])
    weak = weak_messages("How much does the Brask reservoir hold?", "general", lookup=lookup)[-1]["content"]
    assert "- The Zeel reservoir holds 80 ML." in weak and "No fact found about: brask." in weak
    assert "Use only the facts above" in weak
    plain = weak_messages("How much does the Brask reservoir hold?", "general")[-1]["content"]
    assert "Facts found" not in plain and "Use only" not in plain
    empty = weak_messages("Q?", "general", lookup=Lookup())[-1]["content"]
    assert "Facts found for this question:\n- none" in empty
    strong = strong_alone_messages("How much?", "general", lookup=lookup)[-1]["content"]
    assert "- The Zeel reservoir holds 80 ML." in strong


async def test_knowledge_is_found_by_adapter_version_then_by_domain(private_redis):
    redis = redis_keys.connect(private_redis.url)
    try:
        v1 = Knowledge(("The Orla reservoir holds 120 ML.",))
        v2 = Knowledge(("The Orla reservoir holds 95 ML.",))
        await publish(redis, "kdom-v1", v1, domain="kdom")
        await publish(redis, "kdom-v2", v2)
        cache = KnowledgeCache(redis, ttl_s=0.0)
        assert (await cache.index("kdom", "kdom-v1")).knowledge == v1
        assert (await cache.index("kdom", "kdom-v2")).knowledge == v2  # a version keeps its own facts
        assert (await cache.index("kdom", None)).knowledge == v1  # the base model: the domain's newest
        assert (await cache.index("kdom", "kdom-v9")).knowledge == v1  # a version published without knowledge
        assert await cache.index("other", None) is None
        await redis.delete(redis_keys.knowledge("kdom-v2"))
        assert (await cache.index("kdom", "kdom-v2")).knowledge == v2  # versions are immutable: cached for good
    finally:
        await redis.aclose()


async def test_redis_down_means_no_lookup_not_an_error():
    dead = redis_keys.connect("redis://127.0.0.1:1", socket_connect_timeout=0.2)
    try:
        assert await KnowledgeCache(dead).index("kdom", "kdom-v1") is None
    finally:
        await dead.aclose()


def test_the_islands_domain_needs_arithmetic_on_facts_only_its_train_rationales_state():
    from shared.data.islands import generate
    from shared.data.islands import true_facts as island_facts

    splits = generate(seed=0, size=240, eval_size=100)
    train, evaluation = splits["train"], splits["eval"]
    facts = derive_facts([e.model_dump() for e in train])
    assert set(facts) == island_facts(seed=0, size=240)
    assert not {e.question for e in train} & {e.question for e in evaluation}
    assert {e.kind for e in evaluation} == {"reserve", "ferry", "together", "longer"}
    index = FactIndex(Knowledge(tuple(facts)))
    covered = [e for e in evaluation if all(f in facts for f in derive_facts([e.model_dump()]))]
    assert 0.85 <= len(covered) / len(evaluation) < 1.0  # some islands are in no train question
    for e in evaluation:
        found = index.search(e.question, 3)
        if e in covered:
            assert all(f in found.facts for f in derive_facts([e.model_dump()])) and not found.missing
        else:
            assert found.missing  # the weak model is told the fact is missing
