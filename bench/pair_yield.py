"""How many preference pairs does collaborative feedback give, by K (drafts per question) and temperature?

On a running stack whose domain has an active adapter (e.g. after `cowest sft`), for the same training
questions: strong alone once, then `max(K)` sampled drafts per temperature, each refined by the strong model
and scored (the trainer's own CollabClient: serving's prompts and limits). The yield for a smaller K uses
the first K of those drafts (i.i.d. samples, so it is what K drafts would have given), which keeps the
comparison paired and the cost at one sampling per temperature.

Reports per (K, temperature): yield (share of questions with >= 1 pair), pairs, and the Δ histogram
(score with the draft - strong alone, per draft).

    .venv/bin/python bench/pair_yield.py --domain synthetic --questions 12 [--ks 4,8,16] [--temperatures 0.8,1.2]

Synthetic: the training split of the demo's company (seed 0, `--size`, default 200).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import time
from collections import Counter
from pathlib import Path

from services.trainer.collab import CollabClient
from services.trainer.evaluators import evaluate
from services.trainer.pairs import ScoredDraft, select_pairs
from services.trainer.store import is_heldout
from shared import redis_keys
from shared.cpu import cpu_summary
from shared.data import loaders
from shared.data.synthetic import generate, is_fact_card


async def sample(client: CollabClient, items, adapter: str, temperature: float, k: int, concurrency: int) -> list:
    sem = asyncio.Semaphore(concurrency)

    async def one(ex) -> dict:
        async with sem:
            alone = await client.refine(ex.question, ex.domain, None, ex.context)
            alone_score = await evaluate(ex.domain, ex.question, alone, ex.answers[0], None)
            drafts = await client.drafts(ex.question, ex.domain, adapter, k, temperature, ex.context, seed=7)
            refined = await asyncio.gather(*(client.refine(ex.question, ex.domain, d, ex.context) for d in drafts))
            scores = [await evaluate(ex.domain, ex.question, r, ex.answers[0], None) for r in refined]
        return {
            "alone": alone_score,
            "drafts": [ScoredDraft(d, r, s) for d, r, s in zip(drafts, refined, scores, strict=True)],
        }

    return await asyncio.gather(*(one(ex) for ex in items))


def summarise(rows: list[dict], k: int) -> dict:
    with_pair, pairs, hist = 0, 0, Counter()
    for row in rows:
        drafts = row["drafts"][:k]
        found = select_pairs(drafts, row["alone"], 0.0, 1)
        with_pair += bool(found)
        pairs += len(found)
        hist.update(f"{round(d.score - row['alone'], 1):+.1f}" for d in drafts)
    return {
        "yield": with_pair / len(rows),
        "pairs": pairs,
        "hist": dict(sorted(hist.items(), key=lambda kv: float(kv[0]))),
    }


async def main_async(args) -> None:
    from cowest.stack import Stack

    settings = Stack().trainer_settings().model_copy(update={"concurrency": args.concurrency})
    client = CollabClient(settings)

    redis = redis_keys.connect(settings.endpoints.redis_url)
    adapter = (await redis.get(f"adapter:active:{args.domain}") or b"").decode() or None
    await redis.aclose()
    train = (
        generate(seed=0, size=args.size)["train"] if args.domain == "synthetic" else loaders.load(args.domain, "train")
    )
    pool = [e for e in train if not is_fact_card(e) and not is_heldout(e.domain, e.question)]
    random.Random(args.seed).shuffle(pool)
    items = pool[: args.questions]
    ks = [int(k) for k in args.ks.split(",")]
    results = []
    try:
        for temperature in (float(t) for t in args.temperatures.split(",")):
            t0 = time.perf_counter()
            rows = await sample(client, items, adapter, temperature, max(ks), args.concurrency)
            seconds = time.perf_counter() - t0
            for k in ks:
                results.append({"k": k, "temperature": temperature, **summarise(rows, k)})
                print(json.dumps(results[-1]), flush=True)
            print(f"temperature {temperature}: {seconds:.0f}s", flush=True)
    finally:
        await client.aclose()
    lines = [
        f"# Pair yield by K and temperature: {args.domain}, adapter {adapter}",
        "",
        f"`.venv/bin/python bench/pair_yield.py --domain {args.domain} --questions {args.questions} "
        f"--ks {args.ks} --temperatures {args.temperatures}`",
        "",
        f"Machine: {platform.node()}, {cpu_summary()}. {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
        f"Weak {settings.endpoints.weak_model} ({adapter}), strong {settings.endpoints.strong_model}. {len(items)} training questions "
        "(not held out), the same for every row; smaller K = the first K of the same drafts.",
        "",
        "| K | temperature | yield (questions with >= 1 pair) | pairs | Δ histogram (Δ: drafts) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['k']} | {r['temperature']} | {r['yield']:.0%} | {r['pairs']} | "
        + ", ".join(f"{d}: {n}" for d, n in r["hist"].items())
        + " |"
        for r in results
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", default="synthetic")
    parser.add_argument("--questions", type=int, default=12)
    parser.add_argument("--size", type=int, default=200, help="synthetic domain: the demo's size")
    parser.add_argument("--ks", default="4,8,16")
    parser.add_argument("--temperatures", default="0.8,1.2")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/pair_yield.md"))
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
