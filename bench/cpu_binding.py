"""Which CPU binding for the weak and strong vLLM servers on one machine?

Starts both real servers (default profile) under each binding and times the CoWest request shape:
a weak draft (48 tokens) then a strong refinement given the draft (48 tokens), `ignore_eos` so
every run decodes the same number of tokens. Sequential pipelines measure latency; 4 concurrent
pipelines started together measure batching; 10 pipelines arriving one every 3 s make the weak and
strong stages of different requests overlap, as live traffic does.

    .venv/bin/python bench/cpu_binding.py [--profile default] [--out bench/results/cpu_binding.md]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from cowest.processes import ProcessTable, wait_until_ready
from cowest.provision import pull_profile
from services.strong_server.settings import StrongServerSettings
from services.weak_server.admin_client import VllmAdminClient
from services.weak_server.settings import WeakServerSettings
from shared.catalog import get_model, get_profile
from shared.config import CowestSettings

BINDINGS = {
    "split: weak=0, strong=1": ("0", "1"),
    "shared: both on 0-1": ("0-1", "0-1"),
    "strong on both: weak=0, strong=0-1": ("0", "0-1"),
}
QUESTIONS = [
    "What is the capital of France?",
    "Why is the sky blue?",
    "What causes tides?",
    "How do vaccines work?",
    "What is photosynthesis?",
]
TOKENS = 48
STAGGER_S = 3.0


async def chat(client: httpx.AsyncClient, model: str, content: str) -> float:
    t0 = time.perf_counter()
    r = await client.post(
        "/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": TOKENS,
            "temperature": 0,
            "ignore_eos": True,
        },
    )
    r.raise_for_status()
    return time.perf_counter() - t0


async def pipeline(weak: httpx.AsyncClient, strong: httpx.AsyncClient, names, question: str) -> tuple[float, float]:
    draft_s = await chat(weak, names[0], question)
    refine_s = await chat(
        strong, names[1], f"Question: {question}\nDraft answer: (a {TOKENS}-token draft)\nRefine it."
    )
    return draft_s, refine_s


async def measure(urls, names) -> dict[str, float]:
    async with (
        httpx.AsyncClient(base_url=urls[0], timeout=600) as weak,
        httpx.AsyncClient(base_url=urls[1], timeout=600) as strong,
    ):
        await pipeline(weak, strong, names, "warm up")
        seq = [await pipeline(weak, strong, names, q) for q in QUESTIONS[:3]]
        t0 = time.perf_counter()
        await asyncio.gather(*(pipeline(weak, strong, names, q) for q in QUESTIONS[:4]))
        conc_wall = time.perf_counter() - t0

        # Staggered arrivals (one every STAGGER_S): weak drafts and strong refinements overlap,
        # so both servers compute at the same time, as under live traffic.
        async def arrive(i: int, q: str) -> float:
            await asyncio.sleep(i * STAGGER_S)
            return sum(await pipeline(weak, strong, names, q))

        stag = await asyncio.gather(*(arrive(i, q) for i, q in enumerate(QUESTIONS * 2)))
    return {
        "weak_s": statistics.median(d for d, _ in seq),
        "strong_s": statistics.median(r for _, r in seq),
        "pipeline_s": statistics.median(d + r for d, r in seq),
        "concurrent4_wall_s": conc_wall,
        "staggered_p50_s": statistics.median(stag),
        "staggered_max_s": max(stag),
    }


async def run_binding(settings: CowestSettings, profile: str, weak_bind: str, strong_bind: str, run_dir: Path):
    p = get_profile(profile)
    servers = {
        "weak": WeakServerSettings(port=18101, cpu_bind=weak_bind),
        "strong": StrongServerSettings(port=18102, cpu_bind=strong_bind),
    }
    table = ProcessTable(run_dir)
    keys = {"weak": p.weak, "strong": p.strong}
    for role, server in servers.items():
        spec = get_model(keys[role])
        table.start(role, server.argv(settings.models_dir / spec.key, spec.key, spec.vllm_dtype), server.env())
    try:

        def probe(url):
            async def ready():
                async with VllmAdminClient(url, timeout=5) as c:
                    return await c.ready()

            return ready

        t0 = time.perf_counter()
        await wait_until_ready(table, {r: probe(s.base_url) for r, s in servers.items()}, 600)
        ready_s = time.perf_counter() - t0
        result = await measure([servers["weak"].base_url, servers["strong"].base_url], [p.weak, p.strong])
        return {"ready_s": ready_s, **result}
    finally:
        for role in servers:
            table.stop(role)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="default")
    ap.add_argument("--out", default="bench/results/cpu_binding.md")
    args = ap.parse_args()
    settings = CowestSettings()
    pull_profile(settings, args.profile)
    rows = []
    for label, (wb, sb) in BINDINGS.items():
        with tempfile.TemporaryDirectory() as run_dir:
            res = asyncio.run(run_binding(settings, args.profile, wb, sb, Path(run_dir)))
        print(label, {k: round(v, 2) for k, v in res.items()}, flush=True)
        rows.append((label, res))
    base = rows[0][1]
    lines = [
        f"# CPU binding of the weak and strong vLLM servers ({time.strftime('%Y-%m-%d')})",
        "",
        f"Command: `.venv/bin/python bench/cpu_binding.py --profile {args.profile}`  ",
        f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, no GPU; "
        f"profile `{args.profile}`; {TOKENS} tokens per stage, ignore_eos, temperature 0.",
        "",
        "| binding | ready (s) | weak draft (s) | strong refine (s) | pipeline (s) | 4 at once, wall (s) | staggered p50 / max (s) | pipeline vs split | 4 at once vs split | staggered p50 vs split |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in rows:
        lines.append(
            f"| {label} | {r['ready_s']:.0f} | {r['weak_s']:.2f} | {r['strong_s']:.2f} | {r['pipeline_s']:.2f} | "
            f"{r['concurrent4_wall_s']:.2f} | {r['staggered_p50_s']:.2f} / {r['staggered_max_s']:.2f} | "
            f"{r['pipeline_s'] / base['pipeline_s']:.2f}x | "
            f"{r['concurrent4_wall_s'] / base['concurrent4_wall_s']:.2f}x | "
            f"{r['staggered_p50_s'] / base['staggered_p50_s']:.2f}x |"
        )
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
