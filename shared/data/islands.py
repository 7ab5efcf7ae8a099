"""A second generated domain, of another shape than the synthetic company: fictional island settlements whose
facts live only inside the train rationales (no fact cards), and questions that need several steps of
arithmetic or two facts combined.

Why this shape: the synthetic company's questions need one fact and at most one step, and its measured
bottleneck was retrieval. Here each answer needs the right fact *and* multi-step arithmetic (a product, then a
quotient; or two computed values compared), which a 135M weak model gets wrong even with the fact in front of it,
and where a stronger reasoner (or a calculator it is given) can plausibly add something: the paper's claim is
about such domains.

Each island has one fact statement: residents, water reserve (kilolitres), use per resident (litres a day), the
ferry's distance from the mainland (km) and speed (km/h). Question kinds:
- `reserve`: how many whole days the water reserve lasts (reserve x 1000 / (residents x use), rounded down),
  sometimes after newcomers move in (a number the question gives);
- `ferry`: the ferry's crossing time in minutes, one way or there and back (distance / speed x 60, rounded);
- `together`: residents of two islands together;
- `longer`: whose reserve lasts longer (two computed values compared).
A thirtieth of the islands appear in no train question: questions about them are not covered by the train
split (the weak model must say it lacks the fact rather than borrow another island's).
"""

from __future__ import annotations

import random
import re

from shared.data.example import Example

_SYL = ["var", "hol", "kel", "dra", "mos", "tin", "brek", "aun", "sil", "orr", "pel", "gun", "vik", "ast", "lum", "ey"]


def _name(rng: random.Random) -> str:
    return "".join(rng.choice(_SYL) for _ in range(2)).capitalize() + rng.choice(["holm", "ey", "sund", "ness"])


def _fact(i: dict) -> str:
    return (
        f"{i['name']} has {i['residents']} residents and a water reserve of {i['reserve']} kilolitres; each resident "
        f"uses {i['use']} litres a day, and its ferry sails {i['distance']} km from the mainland at {i['speed']} km/h."
    )


def _days(i: dict) -> int:
    return i["reserve"] * 1000 // (i["residents"] * i["use"])


def _question(rng: random.Random, islands: list[dict], kind: str) -> tuple[str, str, list[dict], str]:
    a, b = rng.sample(islands, 2)
    if kind == "reserve":
        more = rng.choice([0, 0, 40, 75, 120, 200])  # newcomers: a question the train split has not asked
        residents = a["residents"] + more
        daily, litres = residents * a["use"], a["reserve"] * 1000
        days = litres // daily
        step = (
            (f"{a['residents']} + {more} = {residents} residents; " if more else "")
            + f"{residents} x {a['use']} = {daily} litres a day; {a['reserve']} kilolitres = {litres} litres; "
            f"{litres} / {daily} = {litres / daily:.2f}, so the reserve lasts {days} whole days."
        )
        question = f"For how many whole days does the water reserve of {a['name']} last" + (
            f" if {more} more residents move there?" if more else "?"
        )
        return question, f"{days} days", [a], step
    if kind == "ferry":
        legs = rng.choice([1, 2])
        minutes = round(legs * a["distance"] / a["speed"] * 60)
        step = (
            (f"{a['distance']} x 2 = {2 * a['distance']} km; " if legs == 2 else "")
            + f"{legs * a['distance']} / {a['speed']} = {legs * a['distance'] / a['speed']:.3f} hours; x 60 = "
            f"{minutes} minutes (rounded)."
        )
        trip = "there and back" if legs == 2 else "one way"
        return f"How many minutes does the ferry to {a['name']} take, {trip}?", f"{minutes} minutes", [a], step
    if kind == "together":
        total = a["residents"] + b["residents"]
        step = f"{a['residents']} + {b['residents']} = {total} residents."
        return f"How many residents do {a['name']} and {b['name']} have together?", f"{total} residents", [a, b], step
    da, db = _days(a), _days(b)
    if da == db:
        return "", "", [], ""
    longer = a if da > db else b
    step = (
        f"{a['name']}: {a['reserve'] * 1000} / ({a['residents']} x {a['use']}) = {da} days; {b['name']}: "
        f"{b['reserve'] * 1000} / ({b['residents']} x {b['use']}) = {db} days, so {longer['name']}'s reserve "
        "lasts longer."
    )
    return f"Whose water reserve lasts longer, {a['name']}'s or {b['name']}'s?", longer["name"], [a, b], step


def generate(
    seed: int = 0, size: int = 240, eval_fraction: float = 0.3, eval_size: int | None = None, islands: int = 60
) -> dict[str, list[Example]]:
    """{"train": [...], "eval": [...]}: `size` questions about `islands` islands; eval questions are new
    questions (never in train), `eval_size` of them when given."""
    rng = random.Random(seed)
    names: set[str] = set()
    places: list[dict] = []
    while len(places) < islands:
        name = _name(rng)
        if name in names:
            continue
        names.add(name)
        places.append(
            {
                "name": name,
                "residents": rng.randrange(80, 2000),
                "reserve": rng.randrange(200, 9000),
                "use": rng.choice([90, 110, 120, 135, 150, 180]),
                "distance": rng.randrange(12, 160),
                "speed": rng.choice([18, 22, 25, 30, 36]),
            }
        )
    unseen = {p["name"] for p in places[: max(1, islands // 30)]}  # asked about in eval only
    kinds = ["reserve", "ferry", "together", "longer"]

    def draw(pool: list[dict], prefix: str, n: int) -> Example | None:
        question, answer, used, step = _question(rng, pool, kinds[n % len(kinds)])  # kinds in equal shares
        if not question:
            return None
        kind = next(k for k in kinds if _matches(k, question))
        return Example(
            id=f"isl{seed}-{prefix}-{kind}-{n:04d}",
            domain="islands",
            question=question,
            answer=answer,
            kind=kind,
            rationale=" ".join(_fact(i) for i in used) + " " + step,
        )

    seen_pool = [p for p in places if p["name"] not in unseen]
    train: list[Example] = []
    asked: set[str] = set()
    while len(train) < int(size * (1 - eval_fraction)):
        if (e := draw(seen_pool, "train", len(train))) and e.question not in asked:
            asked.add(e.question)
            train.append(e)
    evaluation: list[Example] = []
    target = eval_size or int(size * eval_fraction)
    tries = 0
    while len(evaluation) < target and tries < 200 * target:
        tries += 1
        if (e := draw(places, "eval", len(evaluation))) and e.question not in asked:
            asked.add(e.question)
            evaluation.append(e)
    return {"train": train, "eval": evaluation}


def _matches(kind: str, question: str) -> bool:
    return {
        "reserve": question.startswith("For how many"),
        "ferry": question.startswith("How many minutes"),
        "together": question.startswith("How many residents"),
        "longer": question.startswith("Whose"),
    }[kind]


def true_facts(seed: int = 0, size: int = 240) -> set[str]:
    """The fact statement of every island that some train question is about: what derivation should find."""
    train = generate(seed=seed, size=size)["train"]
    return {m.group() for e in train for m in _FACT.finditer(e.rationale or "")}


_FACT = re.compile(r"[A-Z][a-z]+ has \d+ residents .*? km/h\.")
