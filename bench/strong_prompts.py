"""Does the strong model reason with a draft, and which prompt makes it? A/B on the synthetic company's
**train** split (never the evaluation split), through the project's own request builder
(`shared/collaboration.py`), greedy.

Prompts: `plain` (the synthetic spec without its Work line and worked example: the prompt before this bench),
`worked` (the built-in spec: one worked example + "Work: ... / Answer: ...") and `worked2` (`worked` plus a second
made-up example, a comparison whose draft concludes wrongly and whose reply follows its own Work line instead). Drafts given to the strong model:
- `alone`: none (strong alone);
- `oracle`: the gold rationale + "Answer: <gold>" (facts and conclusion right: keeping it is right);
- `slip`: the same rationale with its conclusion replaced by another question's answer of the same kind (facts
  right, conclusion wrong: only recomputing from the facts gets it right).
Per cell: the domain metric, how often the answer equals the draft's answer, completion tokens, latency.

    .venv/bin/python bench/strong_prompts.py --serve llamacpp-t2 --model Qwen2.5-Coder-1.5B-Instruct [--n 16]
    .venv/bin/python bench/strong_prompts.py --url http://127.0.0.1:8002/v1 --model Qwen2.5-Coder-0.5B-Instruct
    .venv/bin/python bench/strong_prompts.py --url http://127.0.0.1:8002/v1 --model Qwen2.5-Coder-1.5B-Instruct \
        --prompts worked,worked2 --n 24
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from cowest.processes import ProcessTable, wait_until_ready
from shared import domains
from shared.collaboration import Ask, Collaboration, Limits
from shared.config import CowestSettings
from shared.cpu import cpu_summary
from shared.data.synthetic import generate, is_fact_card
from shared.domains import Demonstration
from shared.metrics import final_answer, normalize
from shared.upstream import Upstream

GREEDY = {"temperature": 0.0}
PROMPTS = ("plain", "worked", "worked2")

# A made-up company (not from any split): the draft's facts are right and its conclusion is wrong.
OVERRULE = Demonstration(
    question="At Borealis Ltd: which is heavier, the Tarn valve or the Osk hinge?",
    draft="The Tarn valve (BR-318) costs 95 euros, weighs 31 kg, has a 12-month warranty and is made in the Harlow "
    "plant, managed by Ada Quist. The Osk hinge (BA-702) costs 22 euros, weighs 8 kg, has a 6-month warranty "
    "and is made in the Harlow plant, managed by Ada Quist. 31 kg vs 8 kg, so the Osk hinge is heavier.\n"
    "Answer: the Osk hinge",
    work="Tarn valve 31 kg; Osk hinge 8 kg; 31 kg > 8 kg, so the Tarn valve is heavier (the draft's conclusion "
    "does not follow from its own facts).",
    answer="the Tarn valve",
)


def slip(example, others) -> str | None:
    """The rationale with its conclusion (the gold answer's last mention) swapped for a wrong one."""
    gold = example.answers[0]
    wrong = next(
        (o.answers[0] for o in others if o.kind == example.kind and normalize(o.answers[0]) != normalize(gold)), None
    )
    at = example.rationale.rfind(gold)
    if wrong is None or at < 0:
        return None
    return f"{example.rationale[:at]}{wrong}{example.rationale[at + len(gold) :]}\nAnswer: {wrong}"


async def run(url: str, model: str, n: int, concurrency: int, prompts: list[str]) -> list[dict]:
    data = generate(seed=0, size=240)["train"]
    pool = [e for e in data if not is_fact_card(e)]
    random.Random(7).shuffle(pool)
    items = pool[:n]
    worked = domains.get("synthetic")
    variants = {
        "plain": worked.model_copy(update={"name": "synthetic-plain", "work_line": False, "demonstrations": []}),
        "worked2": worked.model_copy(
            update={"name": "synthetic-worked2", "demonstrations": [*worked.demonstrations, OVERRULE]}
        ),
    }
    for variant in variants.values():
        domains.register_local(variant)  # bench-only variants, never stored
    strong = Upstream("strong", url, timeout_s=600, connect_timeout_s=5)
    collab = Collaboration(strong, strong, model, model, Limits())
    sem = asyncio.Semaphore(concurrency)

    async def one(prompt: str, draft_kind: str, ex) -> dict | None:
        draft = {"alone": None, "oracle": f"{ex.rationale}\nAnswer: {ex.answers[0]}", "slip": slip(ex, pool)}[
            draft_kind
        ]
        if draft_kind != "alone" and draft is None:
            return None
        domain = "synthetic" if prompt == "worked" else variants[prompt].name
        async with sem:
            stage = await collab.refine(Ask(ex.question, domain, strong=GREEDY), draft)
        answer = stage.text or ""
        return {
            "prompt": prompt,
            "draft": draft_kind,
            "kind": ex.kind,
            "error": stage.error,
            "score": worked.score(answer, ex.answers[0]),
            "em": float(normalize(final_answer(answer)) == normalize(ex.answers[0])),
            "echo": float(draft is not None and normalize(final_answer(answer)) == normalize(final_answer(draft))),
            "tokens": stage.usage.completion_tokens if stage.usage else 0,
            "latency_s": stage.latency_ms / 1000,
            "answer": answer,
        }

    jobs = [one(p, d, ex) for p in prompts for d in ("alone", "oracle", "slip") for ex in items]
    rows = [r for r in await asyncio.gather(*jobs) if r]
    await strong.aclose()
    return rows


def table(rows: list[dict]) -> str:
    out = [
        "| prompt | draft | n | score | EM | answer = draft's | completion tokens (mean) | latency s (median) | "
        "errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in PROMPTS:
        for d in ("alone", "oracle", "slip"):
            cell = [r for r in rows if r["prompt"] == p and r["draft"] == d]
            if not cell:
                continue
            mean = {k: statistics.mean(r[k] for r in cell) for k in ("score", "em", "echo", "tokens")}
            echo = f"{mean['echo']:.2f}" if d != "alone" else "-"
            latency = statistics.median(r["latency_s"] for r in cell)
            out.append(
                f"| {p} | {d} | {len(cell)} | {mean['score']:.2f} | {mean['em']:.2f} | {echo} | "
                f"{mean['tokens']:.0f} | {latency:.1f} | {sum(bool(r['error']) for r in cell)} |"
            )
    return "\n".join(out)


def serve(engine: str, model: str):
    """Start the strong engine alone on both cores (bench/strong_engine.py's launch), return (table, url)."""
    spec = importlib.util.spec_from_file_location("strong_engine", Path(__file__).with_name("strong_engine.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        httpx.get(f"http://127.0.0.1:{module.PORT}/v1/models", timeout=2)
        raise SystemExit(f"port {module.PORT} is already serving: stop that server first")
    except httpx.HTTPError:
        pass
    argv, env, _ = module.engine_argv(engine, model, CowestSettings())
    procs = ProcessTable(Path(tempfile.mkdtemp(prefix="strong-prompts-")))
    procs.start(engine, argv, env, port=module.PORT, model=model)
    url = f"http://127.0.0.1:{module.PORT}"

    async def ready() -> bool:
        try:
            async with httpx.AsyncClient(base_url=url, timeout=5) as client:
                return (await client.get("/v1/models")).status_code == 200
        except httpx.HTTPError:
            return False

    asyncio.run(wait_until_ready(procs, {engine: ready}, 900))
    return procs, f"{url}/v1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--url", help="a running OpenAI-compatible endpoint (ending in /v1)")
    parser.add_argument("--serve", help="start this engine of bench/strong_engine.py instead (e.g. llamacpp-t2)")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--prompts", default="plain,worked", help=f"comma-separated, of {', '.join(PROMPTS)}")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    procs, url = serve(args.serve, args.model) if args.serve else (None, args.url)
    t0 = time.perf_counter()
    try:
        prompts = [p for p in args.prompts.split(",") if p]
        if bad := set(prompts) - set(PROMPTS):
            parser.error(f"unknown prompt(s): {', '.join(sorted(bad))}")
        rows = asyncio.run(run(url, args.model, args.n, args.concurrency, prompts))
    finally:
        if procs:
            procs.stop(args.serve, timeout=20)
    command = " ".join([".venv/bin/python bench/strong_prompts.py", *sys.argv[1:]])
    text = (
        f"## {args.model} ({args.serve or url})\n\n`{command}`"
        f"\n\nMachine: {platform.node()}, {cpu_summary()}. {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{time.perf_counter() - t0:.0f} s. Synthetic company seed 0, train split, {args.n} questions.\n\n"
        f"{table(rows)}\n"
    )
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            f.write(text + "\n")
        with args.out.with_suffix(".jsonl").open("a") as f:
            f.writelines(json.dumps(r | {"model": args.model}) + "\n" for r in rows)


if __name__ == "__main__":
    main()
