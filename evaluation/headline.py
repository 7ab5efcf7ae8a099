"""The report's headline figures as JSON (one object per domain), so that later runs can be compared by a script.

Per domain, in EM points (share of items with full marks): `weak` (the weak model alone, with its knowledge),
`strong` (alone), `strong_retrieval` (the strong model given the same lookup), `collab` (before DPO), `default`
(what the domain serves by default, `default_mode`), `oracle` (the strong model refining the gold rationale),
`after_dpo` (the last promoted round); `collab_minus_weak` and `after_dpo_minus_collab` as `[point, lo, hi]`
(paired 95% bootstrap CI); the weak model's fact recall on new questions in % (`recall_complete`: drafts stating
every value of the needed facts, of the questions the knowledge covers; `recall_any`: the same over all questions
with a rationale) and `coverage` (questions whose needed facts are in the knowledge or the train split);
`generated`: a generated domain (facts no model can know).
"""

from __future__ import annotations

import json
from pathlib import Path

from evaluation.diagnostics import paired_diff
from shared.data import loaders


def _em(rows: list[dict] | None) -> float | None:
    """An item that failed counts as wrong (as in the report's table)."""
    return round(100 * sum(bool(r.get("correct")) for r in rows) / len(rows), 1) if rows else None


def _diff(a: list[dict] | None, b: list[dict] | None) -> list[float] | None:
    d = paired_diff("", a, b) if a and b else None
    return [round(100 * d.mean, 1), round(100 * d.ci[0], 1), round(100 * d.ci[1], 1)] if d else None


def _complete(rows: list[dict], ids: set[str] | None = None) -> float | None:
    values = [
        r["needed_fact_recall"]
        for r in rows
        if not r.get("error") and r.get("needed_fact_recall") is not None and (ids is None or r["id"] in ids)
    ]
    return round(100 * sum(v == 1.0 for v in values) / len(values), 1) if values else None


def domain_headline(runs: list[tuple[str, str, int | None, bool | None, list[dict]]], demo: dict | None) -> dict:
    """`runs`: (label, mode, DPO round or None, lookup, rows) of one domain."""

    def find(mode: str, lookup: bool | None = None, rnd: int | None = None) -> list[dict] | None:
        for _, m, r, lk, rows in runs:
            if m == mode and (lookup is None or lk == lookup) and (rnd is None or (r or 0) == rnd):
                return rows
        return None

    weak = find("weak")
    strong = next((rows for _, m, _, lk, rows in runs if m == "strong" and not lk), None)
    strong_retrieval = find("strong", lookup=True)
    collab = find("collab", rnd=0)
    rounds = sorted((r, rows) for _, m, r, _, rows in runs if m == "collab" and r)
    after = rounds[-1][1] if rounds else None
    knowledge = (demo or {}).get("knowledge") or {}
    # The measured default (chosen on training questions): its rows are the chosen mode's run on the same items
    # (the same requests); without a measurement a domain with an adapter serves the collaboration.
    choice = ((demo or {}).get("default_mode") or {}).get("choice", "collab")
    default_rows = {"weak": weak, "strong_retrieval": strong_retrieval, "collab": collab}.get(choice)
    covered = set(knowledge.get("covered") or [])
    n = max((len(rows) for *_, rows in runs), default=0)
    return {
        "n": n,
        "weak": _em(weak),
        "strong": _em(strong),
        "strong_retrieval": _em(strong_retrieval),
        "collab": _em(collab),
        "default": _em(default_rows),
        "default_mode": choice,
        "oracle": _em(find("oracle")),
        "after_dpo": _em(after),
        "collab_minus_weak": _diff(collab, weak),
        "after_dpo_minus_collab": _diff(after, collab),
        "recall_complete": _complete(weak or [], covered) if covered else None,
        "recall_any": _complete(weak or []),
        "coverage": round(100 * knowledge["coverage"], 1) if "coverage" in knowledge else None,
        "generated": loaders.generated(domain_name(runs)) is not None,
    }


def domain_name(runs: list) -> str:
    rows = next((rows for *_, rows in runs if rows), [])
    return rows[0].get("domain", "") if rows else ""


def write_headline(path: Path, per_domain: dict[str, dict]) -> Path:
    path.write_text(json.dumps(per_domain, indent=2) + "\n")
    return path
