"""Diagnostics that explain a result, from the harness's per-item rows alone:

- keep / fix / break: what the strong model did with the draft, per run and per question kind: the draft was
  right and the answer too (keep), wrong and the answer right (fix), right and the answer wrong (break),
  both wrong; and how often the answer is just the draft's answer. Collaboration beats the weak model alone
  exactly when fix > break.
- paired differences: collaboration - weak alone, collaboration - strong alone, after DPO - before, on the
  same items, with a paired bootstrap CI (independent CIs at n=40 are 25-30 points wide and hide real
  differences; the paired CI resamples items, keeping each item's two outcomes together).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from shared.metrics import bootstrap_ci


@dataclass
class KeepFixBreak:
    items: int
    keep: int
    fix: int
    break_: int
    both_wrong: int
    echo: int  # answers equal to the draft's answer
    # Drafts that state every value of the facts the question needs yet answer wrong, and how many of those the
    # strong model fixed: the part of "fix" a checker (not a knower) can reach.
    facts_right_wrong: int = 0
    facts_right_fixed: int = 0

    def row(self) -> str:
        n = max(1, self.items)
        checked = f"{self.facts_right_fixed} of {self.facts_right_wrong}" if self.facts_right_wrong else "-"
        return (
            f"{self.items} | {100 * self.keep / n:.0f} | {100 * self.fix / n:.0f} | {100 * self.break_ / n:.0f} | "
            f"{100 * self.both_wrong / n:.0f} | {100 * self.echo / n:.0f} | {checked}"
        )


def keep_fix_break(rows: list[dict]) -> KeepFixBreak | None:
    """Over the rows that have a scored draft (collaboration and oracle runs)."""
    rows = [r for r in rows if not r.get("error") and "draft_correct" in r]
    if not rows:
        return None
    count = defaultdict(int)
    for r in rows:
        count[(bool(r["draft_correct"]), bool(r.get("correct")))] += 1
    return KeepFixBreak(
        len(rows),
        count[(True, True)],
        count[(False, True)],
        count[(True, False)],
        count[(False, False)],
        sum(bool(r.get("answer_is_draft")) for r in rows),
        sum(1 for r in rows if r.get("needed_fact_recall") == 1.0 and not r["draft_correct"]),
        sum(1 for r in rows if r.get("needed_fact_recall") == 1.0 and not r["draft_correct"] and r.get("correct")),
    )


@dataclass
class FactRecall:
    items: int
    recall: float
    complete: float
    needed_complete: float | None = None  # drafts stating every value of the facts the question needs

    def row(self) -> str:
        needed = f"{100 * self.needed_complete:.0f}" if self.needed_complete is not None else "-"
        return f"{self.items} | {100 * self.recall:.0f} | {100 * self.complete:.0f} | {needed}"


def facts_recalled(rows: list[dict]) -> FactRecall | None:
    rows = [r for r in rows if not r.get("error")]
    values = [r["fact_recall"] for r in rows if r.get("fact_recall") is not None]
    if not values:
        return None
    needed = [r["needed_fact_recall"] for r in rows if r.get("needed_fact_recall") is not None]
    return FactRecall(
        len(values),
        sum(values) / len(values),
        sum(v == 1.0 for v in values) / len(values),
        sum(v == 1.0 for v in needed) / len(needed) if needed else None,
    )


def by_kind(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("kind"):
            groups[r["kind"]].append(r)
    return dict(sorted(groups.items()))


@dataclass
class PairedDiff:
    label: str
    items: int
    mean: float
    ci: tuple[float, float]

    def row(self) -> str:
        return (
            f"{self.label} | {self.items} | {100 * self.mean:+.1f} | "
            f"[{100 * self.ci[0]:+.1f}, {100 * self.ci[1]:+.1f}]"
        )


def paired_diff(label: str, a: list[dict], b: list[dict]) -> PairedDiff | None:
    """Mean of correct(a) - correct(b) over the items both runs answered, with a paired bootstrap CI."""
    right_b = {r["id"]: float(bool(r.get("correct"))) for r in b if not r.get("error")}
    diffs = [float(bool(r.get("correct"))) - right_b[r["id"]] for r in a if not r.get("error") and r["id"] in right_b]
    if not diffs:
        return None
    return PairedDiff(label, len(diffs), sum(diffs) / len(diffs), bootstrap_ci(diffs))


def markdown(domain: str, runs: list[tuple[str, str, int | None, list[dict]]]) -> list[str]:
    """Sections for one domain; `runs` = (label, mode, DPO round or None, rows) in creation order."""
    lines: list[str] = []
    scored = [(label, rows) for label, mode, _, rows in runs if mode in ("collab", "oracle")]
    table = [(label, kfb) for label, rows in scored if (kfb := keep_fix_break(rows))]
    if table:
        lines += [
            "",
            f"## What the strong model does with the draft: {domain}",
            "",
            "Shares of items (%). keep: draft right, answer right; fix: draft wrong, answer right; break: draft "
            "right, answer wrong; echo: the answer is the draft's answer. Collaboration beats the weak model "
            "alone exactly when fix > break; the oracle row (the gold rationale as the draft) is the ceiling "
            "for any weak model with this strong model. Facts right, answer wrong: drafts that state every value "
            "of the facts the question needs but answer wrong, and how many of them the strong model fixed.",
            "",
            "| Method | Kind | Items | Keep | Fix | Break | Both wrong | Echo | Facts right, answer wrong: fixed |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for label, kfb in table:
            lines.append(f"| {label} | all | {kfb.row()} |")
            rows = next(r for lab, r in scored if lab == label)
            for kind, group in by_kind(rows).items():
                if sub := keep_fix_break(group):
                    lines.append(f"| {label} | {kind} | {sub.row()} |")
    recall = [
        (label, fr) for label, mode, _, rows in runs if mode in ("weak", "collab") and (fr := facts_recalled(rows))
    ]
    if recall:
        lines += [
            "",
            f"## Does the weak model retrieve the facts? {domain}",
            "",
            "Fact recall: the share of the gold rationale's numbers and names (those the question does not "
            "give) that the weak model's draft states, on evaluation questions it was not trained on; "
            "complete: drafts that state all of them (computed values included); needed facts complete: drafts "
            "that state every value of the fact statements the question needs, whatever they then compute.",
            "",
            "| Method | Kind | Items | Fact recall (%) | Complete (%) | Needed facts complete (%) |",
            "|---|---|---|---|---|---|",
        ]
        for label, fr in recall:
            lines.append(f"| {label} | all | {fr.row()} |")
            rows = next(rows for lab, mode, _, rows in runs if lab == label)
            for kind, group in by_kind(rows).items():
                if sub := facts_recalled(group):
                    lines.append(f"| {label} | {kind} | {sub.row()} |")
    weak = next((rows for _, mode, _, rows in runs if mode == "weak"), None)
    strongs = [(label, rows) for label, mode, _, rows in runs if mode == "strong"]
    collab = sorted(
        ((rnd or 0, label, rows) for label, mode, rnd, rows in runs if mode == "collab"), key=lambda x: x[0]
    )
    diffs = []
    if collab:
        first_label, first = collab[0][1], collab[0][2]
        if weak:
            diffs.append(paired_diff(f"{first_label} - weak alone", first, weak))
        for strong_label, strong in strongs:  # strong alone, and strong + retrieval where it ran
            diffs.append(paired_diff(f"{first_label} - {strong_label}", first, strong))
        for _, label, rows in collab[1:]:
            diffs.append(paired_diff(f"{label} - {first_label}", rows, first))
            if weak:
                diffs.append(paired_diff(f"{label} - weak alone", rows, weak))
    diffs = [d for d in diffs if d]
    if diffs:
        lines += [
            "",
            f"## Paired differences: {domain}",
            "",
            "Difference in the share of correct answers on the same items (points), with a 95% paired "
            "bootstrap CI (1000 resamples of items). A CI above 0 means the first method is better.",
            "",
            "| Comparison | Items | Difference | 95% CI |",
            "|---|---|---|---|",
        ]
        lines += [f"| {d.row()} |" for d in diffs]
    return lines
