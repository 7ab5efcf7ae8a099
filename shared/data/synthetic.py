"""A synthetic proprietary-knowledge domain: a fictional company's facts, generated from a seed.

No pretrained model can know these facts; answering needs them *and* a reasoning step (compare two
products, compute an order total under the discount rule, apply the returns policy, chain two facts).
This is CoWest's motivating case in miniature: SFT on the train split gives the weak model the facts
(every product's facts appear in train rationales); the strong model brings the reasoning. Eval
questions combine the same facts in new ways, so no eval question or answer is in train.
"""

from __future__ import annotations

import random
import re
from typing import Any

from shared.data.example import Example

_SYL = ["ka", "lo", "ven", "dra", "mi", "tor", "sel", "quin", "bar", "zu", "nel", "fi", "gor", "ath", "rum", "pex"]
_KINDS = ["valve", "sensor", "pump", "gauge", "relay", "filter", "bracket", "motor"]
_FIRST = ["Ilse", "Tomas", "Marit", "Oskar", "Lena", "Piet", "Greta", "Anouk", "Bram", "Sanne"]
_LAST = ["Varga", "Holm", "Ketel", "Dros", "Meinen", "Falk", "Rook", "Stam"]


def _word(rng: random.Random, parts: int = 2) -> str:
    return "".join(rng.choice(_SYL) for _ in range(parts)).capitalize()


def generate(
    seed: int = 0, size: int = 120, eval_fraction: float = 0.3, eval_size: int | None = None
) -> dict[str, list[Example]]:
    """{"train": [...], "eval": [...]}: about `size` reasoning questions plus one fact card per product (train).
    `eval_size`: draw further new questions about the same facts until the eval split has that many
    (as many as exist when fewer do)."""
    rng = random.Random(seed)
    company = f"{_word(rng, 3)} Instruments"
    cities = sorted({_word(rng) + rng.choice(["burg", "dal", "port", "wick"]) for _ in range(4)})
    managers = {city: f"{rng.choice(_FIRST)} {rng.choice(_LAST)}" for city in cities}
    threshold, discount = rng.choice([10, 20, 25]), rng.choice([10, 15, 20])
    window = rng.choice([30, 45, 60])
    products: list[dict[str, Any]] = []
    names: set[str] = set()
    for code in rng.sample(range(100, 999), max(6, size // 8)):
        name = f"{_word(rng)} {rng.choice(_KINDS)}"
        while name in names:  # product names must identify one product
            name = f"{_word(rng)} {rng.choice(_KINDS)}"
        names.add(name)
        products.append(
            {
                "name": name,
                "code": f"{rng.choice('KQTVX')}{rng.choice('ABR')}-{code}",
                "price": rng.randrange(20, 400),
                "weight": rng.randrange(1, 60),
                "warranty": rng.choice([6, 12, 24, 36]),
                "plant": rng.choice(cities),
            }
        )
    policy = (
        f"{company} policy: orders of {threshold} units or more get {discount}% off; products with a "
        f"warranty of 12 months or more can be returned within {window} days, others cannot be returned."
    )

    def card(p: dict) -> str:
        return (
            f"The {p['name']} ({p['code']}) costs {p['price']} euros, weighs {p['weight']} kg, has a "
            f"{p['warranty']}-month warranty and is made in the {p['plant']} plant, managed by {managers[p['plant']]}."
        )

    items: list[Example] = []

    def add(kind: str, question: str, answer: str, facts: list[str], step: str) -> None:
        items.append(
            Example(
                id=f"syn{seed}-{kind}-{len(items):04d}",
                domain="synthetic",
                question=f"At {company}: {question}",
                answer=answer,
                kind=kind,
                rationale=" ".join(facts) + " " + step,
            )
        )

    def draw() -> None:
        kind = rng.choice(["compare", "total", "return", "manager"])
        a, b = rng.sample(products, 2)
        if kind == "compare":
            heavier = a if a["weight"] > b["weight"] else b
            if a["weight"] == b["weight"]:
                return
            add(
                kind,
                f"which is heavier, the {a['name']} or the {b['name']}?",
                f"the {heavier['name']}",
                [card(a), card(b)],
                f"{a['weight']} kg vs {b['weight']} kg, so the {heavier['name']} is heavier.",
            )
        elif kind == "total":
            units = rng.choice([threshold - 5, threshold, threshold + 7, 3])
            gross = units * a["price"]
            net = gross * (100 - discount) // 100 if units >= threshold else gross
            rule = (
                f"{units} units reach the {threshold}-unit threshold, so {discount}% off {gross} euros"
                if units >= threshold
                else f"{units} units are below the {threshold}-unit threshold: no discount on {gross} euros"
            )
            add(
                kind,
                f"what do {units} units of the {a['name']} cost?",
                f"{net} euros",
                [card(a), policy],
                f"{units} x {a['price']} = {gross} euros; {rule}, total {net} euros.",
            )
        elif kind == "return":
            days = rng.choice([10, window - 5, window + 10])
            ok = a["warranty"] >= 12 and days <= window
            add(
                kind,
                f"can a customer return the {a['name']} {days} days after delivery?",
                "yes" if ok else "no",
                [card(a), policy],
                f"Warranty {a['warranty']} months and {days} days against the {window}-day window, "
                f"so the answer is {'yes' if ok else 'no'}.",
            )
        else:
            add(
                kind,
                f"who manages the plant that makes the {a['name']}?",
                managers[a["plant"]],
                [card(a)],
                f"It is made in {a['plant']}, whose manager is {managers[a['plant']]}.",
            )

    for _ in range(size):
        draw()

    rng.shuffle(items)
    cut = int(len(items) * eval_fraction)
    facts = [
        Example(
            id=f"syn{seed}-fact-{i:04d}",
            domain="synthetic",
            question=f"At {company}: what do you know about the {p['name']}?",
            answer=card(p),
            rationale=card(p),
        )
        for i, p in enumerate(products)
    ]
    train = facts + items[cut:]
    asked = {e.question for e in train}
    evaluation = []
    for e in items[:cut]:  # a question asked twice, or also in train, is scored once or not at all
        if e.question not in asked:
            asked.add(e.question)
            evaluation.append(e)
    tries = 0
    while eval_size and len(evaluation) < eval_size and tries < 100 * eval_size:  # more new questions, same facts
        tries, before = tries + 1, len(items)
        draw()
        if len(items) > before and items[-1].question not in asked:
            asked.add(items[-1].question)
            evaluation.append(items[-1])
    return {"train": train, "eval": evaluation[:eval_size] if eval_size else evaluation}


def true_facts(seed: int = 0, size: int = 120) -> set[str]:
    """The statements the company was generated from (each product's card and the policy): the ground truth
    that facts derived from the train split are measured against."""
    train = generate(seed=seed, size=size)["train"]
    cards = {e.rationale for e in train if is_fact_card(e) and e.rationale}
    policies = {m.group() for e in train for m in _POLICY.finditer(e.rationale or "")}
    return cards | policies


_POLICY = re.compile(r"[A-Z][a-z]+ Instruments policy: .*? cannot be returned\.")


def is_fact_card(example: Example | dict) -> bool:
    """A product's fact card: SFT material, not a question users ask (live traffic and pair building skip it; the
    SFT stop rule never holds one out, since it is the only statement of its facts). Takes an example or a row."""
    return "-fact-" in (example.get("id", "") if isinstance(example, dict) else example.id)
