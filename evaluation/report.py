"""`cowest report`: evaluation results -> a markdown table in the paper's format, plus PNG plots.

Reads `<eval_dir>/<domain>/*.jsonl` (+ `.meta.json`) written by the harness, and, where the demo wrote
them, `training.json` (per-round DPO curves and round outcomes) and `demo.json` (wall time per phase).
Rows are runs (weak alone, strong alone, the oracle, collaboration after 0, 1, 2 rounds of DPO) in the order
they were created; columns are each domain's metrics with 95% bootstrap confidence intervals. Then the
diagnostics (evaluation/diagnostics.py): keep / fix / break per method and question kind, and paired
differences with paired bootstrap CIs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from evaluation import diagnostics
from evaluation.harness import latest, read_results
from evaluation.headline import domain_headline, write_headline
from shared import domains as domain_specs
from shared.metrics import bootstrap_ci, macro_f1, normalize


@dataclass
class Metric:
    name: str
    value: float
    ci: tuple[float, float]

    def cell(self) -> str:
        return f"{100 * self.value:.1f} [{100 * self.ci[0]:.1f}, {100 * self.ci[1]:.1f}]"


@dataclass
class RunSummary:
    domain: str
    label: str
    mode: str
    adapter: str | None
    round: int | None
    created: float
    items: int
    errors: int
    wall_s: float
    metrics: list[Metric] = field(default_factory=list)
    correct: int = 0
    weak_tokens: int = 0
    strong_tokens: int = 0
    degraded: int = 0
    rows: list[dict] = field(default_factory=list, repr=False)  # the per-item rows (diagnostics)
    lookup: bool | None = None  # the run's knowledge lookup (None: the domain's way)

    def metric(self, name: str) -> Metric | None:
        return next((m for m in self.metrics if m.name == name), None)

    @property
    def strong_tokens_per_correct(self) -> float | None:
        return self.strong_tokens / self.correct if self.correct else None


def summarize(rows: list[dict], meta: dict) -> RunSummary:
    ok = [r for r in rows if not r.get("error")]
    labelled = any("label" in r for r in ok)
    s = RunSummary(
        meta["domain"],
        meta["label"],
        meta["mode"],
        meta.get("adapter"),
        meta.get("round"),
        meta.get("created", 0.0),
        len(rows),
        len(rows) - len(ok),
        meta.get("wall_s", 0.0),
        lookup=meta.get("lookup"),
    )
    if labelled:  # label tasks: accuracy and macro-F1 (an error or no label counts as wrong)
        golds = [normalize(r["gold"] if isinstance(r["gold"], str) else r["gold"][0]) for r in rows]
        preds = [r.get("label") for r in rows]
        acc = [float(bool(r.get("correct"))) for r in rows]
        pairs = list(zip(preds, golds, strict=True))
        s.metrics = [
            Metric("Acc", _mean(acc), bootstrap_ci(acc)),
            Metric(
                "Macro-F1",
                macro_f1(preds, golds),
                bootstrap_ci(pairs, statistic=lambda xs: macro_f1([p for p, _ in xs], [g for _, g in xs])),
            ),
        ]
    else:  # free-form answers: exact match and token F1, and the domain metric's full marks where it is not EM
        em = [float(r.get("em", 0.0)) for r in rows]
        f1 = [float(r.get("f1", 0.0)) for r in rows]
        s.metrics = [Metric("EM", _mean(em), bootstrap_ci(em)), Metric("F1", _mean(f1), bootstrap_ci(f1))]
        if domain_specs.get(meta["domain"]).metric.type in ("contains_or_f1", "number"):
            full = [float(_full_marks(r)) for r in rows]
            s.metrics.insert(0, Metric("Correct", _mean(full), bootstrap_ci(full)))
        for r in rows:  # the diagnostics read "correct": the same definition for every result file
            r["correct"] = _full_marks(r)
    s.correct = sum(1 for r in ok if r.get("correct"))
    s.weak_tokens = sum(sum((r.get("weak_tokens") or {}).values()) for r in ok)
    s.strong_tokens = sum(sum((r.get("strong_tokens") or {}).values()) for r in ok)
    s.degraded = sum(1 for r in ok if r.get("degraded"))
    s.rows = rows
    return s


def _full_marks(row: dict) -> bool:
    """A free-form answer is correct when the domain metric gives it full marks (recomputed from the score, so
    result files written when "correct" meant an exact match count the same way)."""
    return not row.get("error") and float(row.get("score", row.get("em", 0.0))) >= 1.0


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def load_summaries(eval_dir: Path) -> list[RunSummary]:
    out = []
    for meta_path in sorted(eval_dir.glob("*/*.meta.json")):
        meta = json.loads(meta_path.read_text())
        rows = latest(read_results(meta_path.with_name(meta_path.name.replace(".meta.json", ".jsonl"))))
        if rows:
            out.append(summarize(rows, meta))
    return sorted(out, key=lambda s: s.created)


def _json(path: Path) -> dict | list | None:
    return json.loads(path.read_text()) if path.exists() else None


# --- markdown -------------------------------------------------------------------------------
def markdown(summaries: list[RunSummary], eval_dir: Path, plots: list[str]) -> str:
    domains = list(dict.fromkeys(s.domain for s in summaries))
    labels = list(dict.fromkeys(s.label for s in summaries))
    by = {(s.domain, s.label): s for s in summaries}
    metric_names = {d: [m.name for m in next(s for s in summaries if s.domain == d).metrics] for d in domains}
    sizes = {d: max(s.items for s in summaries if s.domain == d) for d in domains}
    head = ["Method"] + [
        f"{domain_specs.get(d).display_name} {m} (n={sizes[d]})" for d in domains for m in metric_names[d]
    ]
    lines = [
        "## Results",
        "",
        "Percentages with 95% bootstrap confidence intervals (1000 resamples over items).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for label in labels:
        cells = []
        for d in domains:
            s = by.get((d, label))
            cells += [(s.metric(m).cell() if s and s.metric(m) else "-") for m in metric_names[d]]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Cost",
        "",
        "Tokens are prompt + completion per item; a correct answer is the right label (label tasks) or full "
        "marks from the domain's metric (free-form: an exact match, or the reference within the answer). "
        "Wall time is the whole run at its concurrency on this machine.",
        "",
        "| Domain | Method | Items | Errors | Degraded | Weak tokens/item | Strong tokens/item | "
        "Strong tokens per correct answer | vs strong alone | Wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in domains:
        alone = next((s for s in summaries if s.domain == d and s.mode == "strong"), None)
        base = alone.strong_tokens_per_correct if alone else None
        for s in (x for x in summaries if x.domain == d):
            per = s.strong_tokens_per_correct
            ratio = f"{per / base:.2f}x" if per and base and s.mode != "weak" else "-"
            lines.append(
                f"| {d} | {s.label} | {s.items} | {s.errors} | {s.degraded} | {s.weak_tokens / max(1, s.items):.0f} | "
                f"{s.strong_tokens / max(1, s.items):.0f} | {f'{per:.0f}' if per else '-'} | {ratio} | "
                f"{s.wall_s:.0f} |"
            )
    for d in domains:
        lines += diagnostics.markdown(d, [(s.label, s.mode, s.round, s.rows) for s in summaries if s.domain == d])
    for d in domains:
        training = _json(eval_dir / d / "training.json") or []
        demo = _json(eval_dir / d / "demo.json")
        if training:
            lines += [
                "",
                f"## DPO rounds: {d}",
                "",
                "| Round | Outcome | Feedback: questions -> pairs (yield) | Pairs | "
                "Steps | s/step | First loss | Last loss | Last reward margin | Gate: candidate vs active "
                "(items, paired CI) | Candidate |",
                "|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for r in training:
                t = r.get("train") or {}
                loss, margin = t.get("loss") or [None], t.get("reward_margin") or [None]
                gate = (
                    f"{r['candidate_score']:.3f} vs {r['active_score']:.3f}"
                    if r.get("candidate_score") is not None
                    else "-"
                )
                if (g := r.get("gate") or {}).get("diff_ci"):
                    gate += f" ({g['items']}, [{g['diff_ci'][0]:+.3f}, {g['diff_ci'][1]:+.3f}])"
                fb = r.get("feedback") or {}
                feedback = f"{fb['processed']} -> {fb['pairs']} ({fb.get('pair_yield', 0):.0%})" if fb else "-"
                lines.append(
                    f"| {r['demo_round']} | {r['status']}: {_cell(r.get('detail', ''))} | {feedback} | "
                    f"{r.get('pairs', 0)} | "
                    f"{t.get('steps', '-')} | {_f(t.get('seconds_per_step'))} | {_f(loss[0])} | {_f(loss[-1])} | "
                    f"{_f(margin[-1])} | {gate} | {r.get('candidate') or '-'} |"
                )
        if demo and (k := demo.get("knowledge")):
            lines += ["", f"## Knowledge: {d}", ""] + knowledge_lines(k)
        if demo:
            lines += [
                "",
                f"## Wall time per phase: {d}",
                "",
                f"Command: `{demo.get('command', 'cowest demo')}`",
                "",
                "| Phase | Seconds |",
                "|---|---|",
            ]
            lines += [f"| {p['phase']} | {p['seconds']:.0f} |" for p in demo["phases"]]
            lines.append(f"| **total** | **{sum(p['seconds'] for p in demo['phases']):.0f}** |")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def knowledge_lines(k: dict) -> list[str]:
    """The knowledge step of a demo: where the statements came from, how many, what they cover, how well they were
    extracted where the true facts are known, and a sample."""
    if k.get("mechanism") != "lookup":
        return ["The domain's spec keeps the facts in the adapter's weights: no lookup."]
    origin = "the domain's knowledge file" if k["source"] == "file" else "derived from the train split"
    lines = [
        f"{k['facts']} fact statements, {origin}; they hold every needed fact of {100 * k['coverage']:.0f}% of the "
        "evaluation questions (the ceiling of any lookup)."
    ]
    if x := k.get("extraction"):
        lines.append(
            f"Extraction against the {x['true']} statements the domain was generated from: precision "
            f"{100 * x['precision']:.0f}%, recall {100 * x['recall']:.0f}%."
        )
    return lines + ["", "Sample:", ""] + [f"- {_cell(s, 300)}" for s in k.get("sample", [])]


def _cell(text: str, limit: int = 160) -> str:
    """Free text as one markdown table cell: one line, no pipes, bounded length."""
    text = " ".join(str(text).split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _f(x) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) else "-"


# --- plots ----------------------------------------------------------------------------------
def plot(summaries: list[RunSummary], eval_dir: Path, out_dir: Path, prefix: str = "") -> list[str]:
    """Writes the PNGs; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")  # no display here
    import matplotlib.pyplot as plt

    names = []
    domains = list(dict.fromkeys(s.domain for s in summaries))
    # 1. Each metric per method per domain, with its CI.
    fig, axes = plt.subplots(1, len(domains), figsize=(6 * len(domains), 4.5), squeeze=False)
    for ax, d in zip(axes[0], domains, strict=True):
        runs = [s for s in summaries if s.domain == d]
        metric_names = [m.name for m in runs[0].metrics]
        width = 0.8 / len(metric_names)
        for k, name in enumerate(metric_names):
            vals = [100 * r.metric(name).value for r in runs]
            err = [
                [100 * (r.metric(name).value - r.metric(name).ci[0]) for r in runs],
                [100 * (r.metric(name).ci[1] - r.metric(name).value) for r in runs],
            ]
            ax.bar([i + k * width for i in range(len(runs))], vals, width, yerr=err, capsize=3, label=name)
        ax.set_xticks([i + width * (len(metric_names) - 1) / 2 for i in range(len(runs))])
        ax.set_xticklabels([r.label for r in runs], rotation=30, ha="right", fontsize=8)
        ax.set_title(domain_specs.get(d).display_name)
        ax.set_ylabel("%")
        ax.legend()
    names.append(_save(fig, out_dir, f"{prefix}metrics.png"))
    # 2. DPO loss and reward margin per step, one line per round.
    trainings = {d: _json(eval_dir / d / "training.json") or [] for d in domains}
    if any(r.get("train", {}).get("loss") for rounds in trainings.values() for r in rounds):
        fig, (ax_loss, ax_margin) = plt.subplots(1, 2, figsize=(11, 4))
        for d, rounds in trainings.items():
            for r in rounds:
                t = r.get("train") or {}
                if t.get("loss"):
                    ax_loss.plot(
                        range(1, len(t["loss"]) + 1), t["loss"], marker=".", label=f"{d} round {r['demo_round']}"
                    )
                if t.get("reward_margin"):
                    ax_margin.plot(
                        range(1, len(t["reward_margin"]) + 1),
                        t["reward_margin"],
                        marker=".",
                        label=f"{d} round {r['demo_round']}",
                    )
        ax_loss.set(title="DPO loss per step", xlabel="step")
        ax_margin.set(title="DPO reward margin per step", xlabel="step")
        ax_loss.legend(fontsize=8)
        ax_margin.legend(fontsize=8)
        names.append(_save(fig, out_dir, f"{prefix}dpo_training.png"))
    # 3. The collaboration's metric per round, against the strong model alone.
    if any(s.round is not None for s in summaries):
        fig, axes = plt.subplots(1, len(domains), figsize=(5 * len(domains), 4), squeeze=False)
        for ax, d in zip(axes[0], domains, strict=True):
            runs = sorted((s for s in summaries if s.domain == d and s.round is not None), key=lambda s: s.round)
            if not runs:
                continue
            name = runs[0].metrics[-1].name
            ys = [100 * r.metric(name).value for r in runs]
            err = [
                [y - 100 * r.metric(name).ci[0] for y, r in zip(ys, runs, strict=True)],
                [100 * r.metric(name).ci[1] - y for y, r in zip(ys, runs, strict=True)],
            ]
            ax.errorbar([r.round for r in runs], ys, yerr=err, marker="o", capsize=3, label="collaboration")
            if alone := next((s for s in summaries if s.domain == d and s.mode == "strong"), None):
                ax.axhline(100 * alone.metric(name).value, ls="--", color="grey", label="strong alone")
            ax.set(title=f"{domain_specs.get(d).display_name}: {name} per DPO round", xlabel="DPO rounds", ylabel="%")
            ax.set_xticks([r.round for r in runs])
            ax.legend(fontsize=8)
        names.append(_save(fig, out_dir, f"{prefix}rounds.png"))
    return names


def _save(fig, out_dir: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out_dir / name, dpi=110)
    fig.clf()
    import matplotlib.pyplot as plt

    plt.close(fig)
    return name


def write_report(
    eval_dir: Path, out: Path, title: str = "CoWest evaluation", preamble: str = "", with_plots: bool = True
) -> tuple[Path, list[RunSummary]]:
    """Writes `out` (markdown) and its PNGs beside it (named after it); returns the path and the runs."""
    summaries = load_summaries(eval_dir)
    if not summaries:
        raise FileNotFoundError(f"no evaluation results under {eval_dir}: run `cowest eval` or `cowest demo` first")
    out.parent.mkdir(parents=True, exist_ok=True)
    prefix = f"{out.stem}-" if out.stem != "report" else ""
    plots = plot(summaries, eval_dir, out.parent, prefix) if with_plots else []
    out.write_text(f"# {title}\n\n{preamble}\n" + markdown(summaries, eval_dir, plots))
    write_headline(
        out.with_suffix(".json"),
        {
            d: domain_headline(
                [(s.label, s.mode, s.round, s.lookup, s.rows) for s in summaries if s.domain == d],
                _json(eval_dir / d / "demo.json"),  # type: ignore[arg-type]
            )
            for d in dict.fromkeys(s.domain for s in summaries)
        },
    )
    return out, summaries
