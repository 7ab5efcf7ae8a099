"""Two steps of the demo that measure before anything is evaluated: the domain's knowledge (what the lookup can
find, and for a generated domain how well it was extracted) and the domain's default mode, chosen on training
questions held out from SFT (never on evaluation items)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from evaluation.harness import EvalRun, evaluate, latest, read_results, run_paths
from shared import domains, redis_keys
from shared.data import loaders
from shared.data.example import Example
from shared.knowledge import Knowledge, derive_facts, domain_knowledge
from shared.metrics import normalize
from shared.modes import DefaultMode, choose, set_default_mode


def true_facts(domain: str, domain_dir: Path | None, seed: int, size: int) -> set[str] | None:
    """The statements a generated domain was built from (None for a domain whose true facts are unknown)."""
    module = None if domain_dir else loaders.generated(domain)
    return module.true_facts(seed=seed, size=size) if module else None


def knowledge_step(
    domain: str,
    domain_dir: Path | None,
    train: list[Example],
    evaluation: list[Example],
    truth: set[str] | None,
    say: Callable[[str], None],
) -> tuple[Knowledge | None, dict]:
    """(the knowledge the lookup uses, what the report says of it). None when the domain's spec puts the facts in
    the weights or nothing states a fact. Coverage: evaluation questions every fact statement of whose gold
    rationale is in the knowledge."""
    if domains.get(domain).knowledge.mechanism != "lookup":
        say("   the domain's spec says `weights`: no lookup, the facts go into the adapter")
        return None, {"mechanism": "weights"}
    knowledge = domain_knowledge(domain_dir, [e.model_dump() for e in train])
    if not knowledge.facts:
        say("   no fact statement in the domain's knowledge or train split: no lookup")
        return None, {"mechanism": "lookup", "facts": 0}
    statements = {normalize(f) for f in knowledge.facts}
    covered = [
        e.id
        for e in evaluation
        if e.rationale and all(normalize(f) in statements for f in derive_facts([e.model_dump()]))
    ]
    info: dict = {
        "mechanism": "lookup",
        "source": knowledge.source,
        "facts": len(knowledge.facts),
        "sha256": knowledge.sha256,
        "covered": covered,
        "coverage": len(covered) / max(1, sum(bool(e.rationale) for e in evaluation)),
        "sample": list(knowledge.facts[:5]),
    }
    if truth:
        got = set(knowledge.facts)
        info["extraction"] = {
            "true": len(truth),
            "precision": len(got & truth) / max(1, len(got)),
            "recall": len(got & truth) / len(truth),
        }
    origin = "from the domain's knowledge" if knowledge.source == "file" else "derived from the train split"
    extraction = info.get("extraction")
    say(
        f"   {len(knowledge.facts)} fact statements {origin}, covering {info['coverage']:.0%} of the evaluation "
        "questions"
        + (
            f"; extraction precision {extraction['precision']:.0%}, recall {extraction['recall']:.0%}"
            if extraction
            else ""
        )
    )
    return knowledge, info


async def choose_default_mode(
    orchestrator_url: str,
    redis_url: str,
    items: list[Example],
    adapter: str,
    with_retrieval: bool,
    selection_dir: Path,
    concurrency: int,
) -> DefaultMode:
    """Score weak alone, the collaboration and (with knowledge) strong + retrieval on `items` through the
    orchestrator, store the best as the domain's default for `adapter` (shared/modes.py) and return it."""
    if not items:
        raise ValueError("no training question was held out from SFT to choose the default mode on")
    domain = items[0].domain
    candidates: dict[str, tuple[str, bool | None]] = {"weak": ("weak", None), "collab": ("collab", None)}
    if with_retrieval:
        candidates["strong_retrieval"] = ("strong", True)
    scores = {}
    for name, (mode, lookup) in candidates.items():
        run = EvalRun(domain, mode, adapter=adapter, lookup=lookup, concurrency=concurrency)
        await evaluate(orchestrator_url, run, items, selection_dir)
        rows = latest(read_results(run_paths(selection_dir, run)[0]), {e.id for e in items})
        scores[name] = sum(bool(r.get("correct")) for r in rows) / len(items)  # a failed item counts as wrong
    record = choose(scores, len(items), adapter)
    redis = redis_keys.connect(redis_url)
    try:
        await set_default_mode(redis, domain, record)
    finally:
        await redis.aclose()
    return record
