"""`cowest eval`: a domain's examples through the real serving path (orchestrator -> vLLM).

Every mode is one POST /v1/collaborate, so evaluation runs the one collaboration implementation that
serving, collaborative feedback and the gate use (shared/collaboration.py), with serving's token limits
unless a run overrides them, greedy decoding:
- weak:   the weak model alone (with an adapter version), its chain-of-thought draft's final answer
- strong: the strong model alone (the collaborative-feedback baseline prompt)
- collab: the weak draft refined by the strong model
- oracle: the strong model refining the example's gold rationale as if it were the draft: the ceiling of
  what any weak model's draft could get out of this strong model

Each row also says whether the draft alone was right (`draft_correct`) and whether the answer just repeats
the draft's answer (`answer_is_draft`): the report's keep / fix / break diagnostics come from these; and, where
the example has a gold rationale, how many of its facts the weak model's draft states (`fact_recall`).

Requests run concurrently (so vLLM batches them). Every finished item is appended to a per-run JSONL
file at once (prompt, draft, answer, score, latency, tokens), so an interrupted run resumes where it
stopped: items already scored are skipped, items that failed are retried.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from services.trainer.evaluators import metric_for
from shared import domains
from shared.adapters import BASE_ADAPTER as BASE
from shared.data.example import Example
from shared.knowledge import derive_facts
from shared.metrics import exact_match, fact_recall, final_answer, first_label, normalize, token_f1

MODES = ("weak", "strong", "collab", "oracle")


@dataclass
class EvalRun:
    domain: str
    mode: str
    adapter: str | None = None  # weak / collab: a version name, BASE, or None for the domain's active one
    label: str | None = None  # the row name in reports
    round: int | None = None  # collaboration after this many DPO rounds (0: the SFT adapter), for plots
    concurrency: int = 8
    weak_max_tokens: int | None = None  # None: serving's limits
    strong_max_tokens: int | None = None
    # Knowledge lookup (the request's `lookup`): None = the domain's way; True with mode strong = strong +
    # retrieval; False with mode weak = the adapter without its lookup (the facts must be in its weights).
    lookup: bool | None = None

    @property
    def run_id(self) -> str:
        base = self.mode if self.mode in ("strong", "oracle") else f"{self.mode}@{self.adapter or BASE}"
        return base if self.lookup is None else f"{base}{'+' if self.lookup else '-'}lookup"


@dataclass
class Served:
    """What the orchestrator serves: model names and each domain's active adapter (GET /v1/models)."""

    weak_model: str
    strong_model: str
    active: dict[str, str | None] = field(default_factory=dict)
    adapters: list[str] = field(default_factory=list)


async def served(client: httpx.AsyncClient) -> Served:
    r = await client.get("/v1/models")
    r.raise_for_status()
    cards = r.json()["data"]
    by_kind = {c["kind"]: c["id"] for c in cards if c.get("kind") in ("weak", "strong")}
    return Served(
        weak_model=by_kind.get("weak", ""),
        strong_model=by_kind.get("strong", ""),
        active={
            c["domain"]: c.get("active_adapter") for c in cards if c.get("kind") == "pipeline" and c.get("domain")
        },
        adapters=[c["id"] for c in cards if c.get("kind") == "adapter"],
    )


def score_answer(example: Example, answer: str) -> dict:
    """Per-item scores: the domain metric (as the trainer scores), EM and F1 (free-form answers),
    the predicted label and correctness (label tasks: the right label; free-form: the domain metric's full
    marks, never a partial F1, which gives a wrong amount credit for its unit: "573 euros" vs "569 euros" = 0.5)."""
    gold = example.answer
    labels = example.choices or domains.get(example.domain).metric.labels
    if labels:
        label = first_label(answer, [normalize(c) for c in labels])
        correct = label == normalize(gold if isinstance(gold, str) else gold[0])
        return {"score": float(correct), "label": label, "correct": correct}
    metric = metric_for(example.domain)
    score = metric(answer, gold) if isinstance(gold, str) else max(metric(answer, g) for g in gold)
    return {"score": score, "em": exact_match(answer, gold), "f1": token_f1(answer, gold), "correct": score >= 1.0}


def _tokens(usage: dict | None) -> dict:
    usage = usage or {}
    return {"prompt": usage.get("prompt_tokens", 0), "completion": usage.get("completion_tokens", 0)}


def _sampling(max_tokens: int | None) -> dict:
    return {"temperature": 0} | ({"max_tokens": max_tokens} if max_tokens else {})


async def _ask(client: httpx.AsyncClient, run: EvalRun, adapter: str | None, ex: Example) -> dict:
    """One item through the orchestrator: {prompt, draft, answer, weak_tokens, strong_tokens, degraded}."""
    body = {
        "question": ex.question,
        "domain": ex.domain,
        "context": ex.context,
        "mode": run.mode,
        "weak": _sampling(run.weak_max_tokens),
        "strong": _sampling(run.strong_max_tokens),
        "metadata": {"source": "eval", "item": ex.id},
    }
    if run.lookup is not None:
        body["lookup"] = run.lookup
    if run.mode == "oracle":
        if not ex.rationale:
            raise ValueError("the oracle needs the example's gold rationale; this example has none")
        # The draft a perfect weak model would write: its SFT target, the rationale then the answer line.
        body |= {"mode": "collab", "draft": f"{ex.rationale.strip()}\nAnswer: {ex.answers[0]}"}
    elif run.mode != "strong":
        body["adapter"] = adapter or BASE
    r = await client.post("/v1/collaborate", json=body)
    r.raise_for_status()
    out = r.json()
    return {
        "prompt": ex.question,
        "draft": out["draft"] if run.mode != "strong" else None,
        "answer": out["answer"],
        "degraded": out["degraded"],
        "weak_tokens": _tokens(out["weak"].get("usage")),
        "strong_tokens": _tokens(out["strong"].get("usage")),
        "facts": out.get("facts"),
        "facts_missing": out.get("facts_missing"),
    }


async def use_served_spec(client: httpx.AsyncClient, domain: str) -> None:
    """Score with the spec the orchestrator serves the domain with (a domain registered at runtime)."""
    r = await client.get(f"/v1/domains/{domain}")
    if r.status_code == 200 and not r.json().get("builtin"):
        domains.register_local(domains.parse_spec(r.json()["spec"], name=domain))


def read_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash: that item is simply redone
    return rows


def run_paths(eval_dir: Path, run: EvalRun) -> tuple[Path, Path]:
    root = eval_dir / run.domain
    return root / f"{run.run_id}.jsonl", root / f"{run.run_id}.meta.json"


async def evaluate(
    base_url: str,
    run: EvalRun,
    examples: list[Example],
    eval_dir: Path,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    api_key: str | None = None,
    timeout_s: float = 600.0,
) -> dict:
    """Run (or resume) one evaluation; returns its meta (label, counts, wall time) after writing it."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout_s, connect=5.0),
        headers=headers,
        limits=httpx.Limits(max_connections=run.concurrency + 2),
    ) as client:
        names = await served(client)
        await use_served_spec(client, run.domain)
        if run.mode in ("weak", "collab") and run.adapter is None:
            run.adapter = names.active.get(run.domain) or BASE  # pin the version for the whole run
        adapter = None if run.adapter == BASE else run.adapter
        results, meta_path = run_paths(eval_dir, run)
        results.parent.mkdir(parents=True, exist_ok=True)
        old_meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        done = {r["id"] for r in read_results(results) if not r.get("error")}
        todo = [e for e in examples if e.id not in done]
        meta = {
            **old_meta,
            **asdict(run),
            "run_id": run.run_id,
            "label": run.label or old_meta.get("label") or default_label(run),
            "weak_model": names.weak_model,
            "strong_model": names.strong_model,
            "created": old_meta.get("created", time.time()),
            "items": len(examples),
        }
        sem = asyncio.Semaphore(run.concurrency)
        finished = len(examples) - len(todo)
        on_progress(finished, len(examples))
        t0 = time.perf_counter()
        with results.open("a") as out:

            async def one(ex: Example) -> None:
                nonlocal finished
                async with sem:
                    started = time.perf_counter()
                    row = {
                        "id": ex.id,
                        "domain": ex.domain,
                        "kind": ex.kind,
                        "mode": run.mode,
                        "adapter": run.adapter,
                        "question": ex.question,
                        "gold": ex.answer,
                    }
                    try:
                        row |= await _ask(client, run, adapter, ex)
                        row |= score_answer(ex, row["answer"])
                        if row.get("draft"):
                            row["draft_correct"] = score_answer(ex, row["draft"])["correct"]
                            row["answer_is_draft"] = same_answer(row["answer"], row["draft"])
                            if ex.rationale and run.mode != "oracle":
                                row["fact_recall"] = fact_recall(row["draft"], ex.rationale, ex.question)
                                row["needed_fact_recall"] = needed_fact_recall(row["draft"], ex)
                    except (httpx.HTTPError, KeyError, ValueError) as exc:
                        row["error"] = _describe(exc)
                    row["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
                out.write(json.dumps(row) + "\n")
                out.flush()
                finished += 1
                on_progress(finished, len(examples))

            await asyncio.gather(*(one(e) for e in todo))
        meta["wall_s"] = old_meta.get("wall_s", 0.0) + (time.perf_counter() - t0)
        rows = latest(read_results(results), {e.id for e in examples})
        meta["errors"] = sum(1 for r in rows if r.get("error"))
        meta_path.write_text(json.dumps(meta, indent=2))
        return meta


def needed_fact_recall(draft: str, ex: Example) -> float | None:
    """Share of the values of the facts the question needs (the fact statements of its gold rationale, numbers and
    names the question does not give) that the draft states: did the weak model retrieve the fact, whatever it
    then computed. `fact_recall` also counts the rationale's computed values."""
    facts = derive_facts([ex.model_dump()])
    return fact_recall(draft, " ".join(facts), ex.question) if facts else None


def latest(rows: list[dict], ids: set[str] | None = None) -> list[dict]:
    """One row per item: the last written (a retried error is replaced by its retry)."""
    by_id = {r["id"]: r for r in rows if ids is None or r["id"] in ids}
    return list(by_id.values())


def same_answer(answer: str, draft: str) -> bool:
    """The strong model kept the draft's final answer (normalised)."""
    return normalize(final_answer(answer)) == normalize(final_answer(draft))


def default_label(run: EvalRun) -> str:
    if run.mode == "strong" and run.lookup:
        return "Strong + retrieval"
    return {
        "weak": f"Weak alone ({run.adapter or BASE})",
        "strong": "Strong alone",
        "collab": f"Collaboration ({run.adapter or BASE})",
        "oracle": "Oracle: strong refining the gold rationale",
    }[run.mode]


def _describe(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}: {exc.response.text[:300]}"
    return f"{type(exc).__name__}: {exc}"
