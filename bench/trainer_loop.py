"""The trainer's loop on the running stack (`cowest up`, default profile): collaborative-feedback pairs
per minute, then adapter hot-swaps under load (swap latency, failed requests).

1. Pairs: collaborative feedback (strong alone, K weak drafts in one n=K request, K refinements,
   token-F1 against the gold answer) on the first N IfQA dev questions, Q questions at a time.
2. Swaps: registers `--swaps` adapter versions (random non-zero LoRA on the weak base) and activates
   them one after another while a client keeps sending /v1/collaborate; counts failed and degraded
   responses and times load -> verify -> alias flip.

    .venv/bin/python bench/trainer_loop.py [--questions 12] [--k 4] [--swaps 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from cowest.stack import Stack
from services.trainer.app import Trainer
from services.trainer.pairs import select_pairs
from shared.adapters import set_active_adapter

IFQA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "ifqa" / "dev.json"


def random_adapter(base: Path, out: Path, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
        LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.002)
    model.save_pretrained(out)
    return out


class Load(threading.Thread):
    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.results, self.stop = url, [], threading.Event()

    def run(self):
        with httpx.Client(timeout=300) as c:
            while not self.stop.is_set():
                r = c.post(
                    f"{self.url}/v1/collaborate",
                    json={
                        "question": "Name a primary colour.",
                        "domain": "general",
                        "weak": {"max_tokens": 16},
                        "strong": {"max_tokens": 16},
                    },
                )
                self.results.append(
                    (
                        r.status_code,
                        r.json().get("degraded") if r.status_code == 200 else r.text,
                        (r.json().get("weak") or {}).get("adapter") if r.status_code == 200 else None,
                    )
                )


async def pairs_per_minute(t: Trainer, n: int, concurrency: int) -> dict:
    rows = json.loads(IFQA.read_text())[:n]
    sem = asyncio.Semaphore(concurrency)

    async def one(row):
        async with sem:
            fb = await t.collab.feedback(row["question"], "ifqa", None, row["answers"][0])
            return fb, select_pairs(fb.drafts, fb.strong_alone_score)

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(r) for r in rows))
    minutes = (time.perf_counter() - t0) / 60
    pairs = sum(len(p) for _, p in results)
    deltas = [d.score - fb.strong_alone_score for fb, _ in results for d in fb.drafts]
    return {
        "questions": n,
        "minutes": minutes,
        "pairs": pairs,
        "questions_per_min": n / minutes,
        "pairs_per_min": pairs / minutes,
        "helped": sum(d > 0 for d in deltas),
        "hurt": sum(d < 0 for d in deltas),
        "drafts": len(deltas),
        "strong_alone_f1": statistics.fmean(fb.strong_alone_score for fb, _ in results),
    }


async def swaps(t: Trainer, stack: Stack, n: int) -> dict:
    work = Path(tempfile.mkdtemp())
    names = []
    for i in range(n):
        src = random_adapter(t.settings.base_model_dir, work / f"a{i}", seed=i)
        names.append(
            t.registry.register(
                src,
                domain="general",
                base_model=t.settings.endpoints.weak_model,
                base_model_path=t.settings.base_model_dir,
                parent=names[-1] if names else None,
                round=None,
                pairs=None,
                kind="bench",
            ).name
        )
    load = Load(stack.orchestrator_url)
    load.start()
    await asyncio.sleep(5)
    latencies = []
    try:
        for name in names:
            latencies.append(await t.swapper.activate("general", name))
            await asyncio.sleep(8)
    finally:
        load.stop.set()
        await asyncio.to_thread(load.join, 300)
        await set_active_adapter(t.redis, "general", None)
    failed = [r for r in load.results if r[0] != 200 or r[1] is not None]
    return {
        "swaps": n,
        "latency_s": latencies,
        "requests": len(load.results),
        "failed": len(failed),
        "adapters_seen": sorted({r[2] or "base" for r in load.results}),
    }


async def main_async(args) -> str:
    stack = Stack()
    settings = stack.trainer_settings().model_copy(
        update={"k_drafts": args.k, "adapters_dir": Path(tempfile.mkdtemp()) / "adapters"}
    )
    t = Trainer(settings)
    try:
        p = await pairs_per_minute(t, args.questions, args.concurrency)
        s = await swaps(t, stack, args.swaps)
    finally:
        await t.aclose()
    lat = s["latency_s"]
    return "\n".join(
        [
            f"# Trainer loop on the default stack ({time.strftime('%Y-%m-%d')})",
            "",
            f"Command: `.venv/bin/python bench/trainer_loop.py --questions {args.questions} --k {args.k} "
            f"--swaps {args.swaps}` with `cowest up --profile {stack.profile()}` running  ",
            f"Machine: {os.cpu_count()} cores, {platform.machine()}, no GPU; weak {t.settings.endpoints.weak_model} (core 0), "
            f"strong {t.settings.endpoints.strong_model} (core 1), fp32; drafts and answers up to {t.settings.draft_max_tokens}/"
            f"{t.settings.strong_max_tokens} tokens.",
            "",
            "## Collaborative feedback",
            "",
            "| questions (IfQA dev) | K | concurrency | minutes | questions/min | pairs | pairs/min | drafts that helped / hurt / of | strong-alone F1 |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {p['questions']} | {args.k} | {args.concurrency} | {p['minutes']:.1f} | {p['questions_per_min']:.2f} | "
            f"{p['pairs']} | {p['pairs_per_min']:.2f} | {p['helped']} / {p['hurt']} / {p['drafts']} | {p['strong_alone_f1']:.3f} |",
            "",
            "## Hot swaps under load",
            "",
            "| swaps | load -> verify -> flip, p50 / max (s) | requests during swaps | failed or degraded | versions seen by clients |",
            "|---|---|---|---|---|",
            f"| {s['swaps']} | {statistics.median(lat):.2f} / {max(lat):.2f} | {s['requests']} | {s['failed']} | "
            f"{', '.join(s['adapters_seen'])} |",
            "",
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", type=int, default=12)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--swaps", type=int, default=4)
    ap.add_argument("--out", default="bench/results/trainer_loop.md")
    args = ap.parse_args()
    report = asyncio.run(main_async(args))
    Path(args.out).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
