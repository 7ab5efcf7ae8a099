"""What one strong-stage request costs on this machine, with the prompts the islands evaluation sends.

The issue-19 report needs ~1,000 strong requests (five strong modes x 100 items x two domains, plus a DPO round);
this says how long that takes here. Per configuration of the embedded llama.cpp server (the GGUF as shipped),
the same training questions are sent 2 at a time (the default profile's `strong_in_flight`):
- strong + retrieval: the question with the facts the lookup returns (`strong_alone_messages`);
- collaboration: the question with a draft (the item's gold rationale stands in for the weak model's draft: the
  same shape and length, no weak server needed).
llama.cpp's own `timings` split each request into prompt tokens processed, prompt tokens reused from its cache
and tokens decoded.

    .venv/bin/python bench/strong_stage_cost.py [--items 6] [--configs t1c1,t2c01]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from cowest.processes import ProcessTable, wait_until_ready
from cowest.provision.gguf import assemble
from services.strong_server.settings import LlamaCppServerSettings
from shared import prompts
from shared.catalog import get_model
from shared.config import CowestSettings
from shared.cpu import cpu_summary
from shared.data.loaders import load
from shared.knowledge import FactIndex, domain_knowledge

PORT = 18212
MODEL = "Qwen2.5-Coder-1.5B-Instruct"
CONFIGS = {"t1c1": (1, "1"), "t2c01": (2, "0-1")}  # threads, cores: the stack's (core 1) and the whole machine
REQUESTS_PER_REPORT = 1000  # issue 19's n=100 report: 5 strong modes x 100 items x 2 domains, before DPO


def payloads(items: int) -> dict[str, list[dict]]:
    train = load("islands", "train")
    index = FactIndex(domain_knowledge(None, (e.model_dump() for e in train)))
    chosen = [e for e in train if e.rationale][:items]
    common = {"model": MODEL, "temperature": 0, "max_tokens": 256}
    return {
        "strong_retrieval": [
            {
                **common,
                "messages": prompts.strong_alone_messages(e.question, "islands", lookup=index.search(e.question)),
            }
            for e in chosen
        ],
        "collab": [
            {**common, "messages": prompts.strong_messages(e.question, e.rationale or "", "islands")} for e in chosen
        ],
    }


async def run_mode(client: httpx.AsyncClient, bodies: list[dict], in_flight: int) -> list[dict]:
    gate = asyncio.Semaphore(in_flight)

    async def one(body: dict) -> dict:
        async with gate:
            t0 = time.perf_counter()
            r = await client.post("/v1/chat/completions", json=body)
            r.raise_for_status()
            out = r.json()
            t = out.get("timings", {})
            return {
                "wall_s": time.perf_counter() - t0,
                "prompt_tokens": out["usage"]["prompt_tokens"],
                "prompt_processed": t.get("prompt_n"),
                "prompt_cached": t.get("cache_n"),
                "prompt_tok_s": t.get("prompt_per_second"),
                "decoded": out["usage"]["completion_tokens"],
                "decode_tok_s": t.get("predicted_per_second"),
            }

    t0 = time.perf_counter()
    rows = await asyncio.gather(*(one(b) for b in bodies))
    elapsed = time.perf_counter() - t0
    return [dict(r, batch_s=elapsed) for r in rows]


async def measure(config: str, items: int, in_flight: int, settings: CowestSettings) -> dict:
    threads, cores = CONFIGS[config]
    gguf = assemble(get_model(MODEL).gguf, settings.downloads_dir)
    server = LlamaCppServerSettings(port=PORT, cpu_bind=cores, threads=threads, parallel=in_flight)
    table = ProcessTable(Path(tempfile.mkdtemp(prefix="strong-cost-")))
    table.start(config, server.argv(gguf, MODEL), {}, port=PORT, model=MODEL)
    result: dict = {"config": config, "threads": threads, "cores": cores, "modes": {}}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}", timeout=1800) as client:

            async def ready() -> bool:
                try:
                    return (await client.get("/health")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_until_ready(table, {config: ready}, 600)
            for mode, bodies in payloads(items).items():
                rows = await run_mode(client, bodies, in_flight)
                result["modes"][mode] = {
                    "requests": rows,
                    "s_per_request": rows[0]["batch_s"] / len(rows),  # at `in_flight` in flight: throughput
                    "prompt_tokens": statistics.mean(r["prompt_tokens"] for r in rows),
                    "prompt_cached": statistics.mean(r["prompt_cached"] or 0 for r in rows),
                    "prompt_tok_s": statistics.mean(r["prompt_tok_s"] or 0 for r in rows),
                    "decoded": statistics.mean(r["decoded"] for r in rows),
                    "decode_tok_s": statistics.mean(r["decode_tok_s"] or 0 for r in rows),
                }
                print(config, mode, json.dumps({k: v for k, v in result["modes"][mode].items() if k != "requests"}))
    finally:
        table.stop(config, timeout=20)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=6)
    parser.add_argument("--in-flight", type=int, default=2)
    parser.add_argument("--configs", default="t1c1,t2c01")
    parser.add_argument("--out", type=Path, default=Path("bench/results/strong_stage_cost.md"))
    args = parser.parse_args()
    settings = CowestSettings()
    results = [asyncio.run(measure(c, args.items, args.in_flight, settings)) for c in args.configs.split(",")]
    lines = [
        "# Strong-stage cost per request on this machine (islands prompts)",
        "",
        f"`.venv/bin/python bench/strong_stage_cost.py --items {args.items} --configs {args.configs}`",
        "",
        f"Machine: {platform.node()}, {cpu_summary()}. {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"{MODEL} Q4_K_M on llama.cpp, {args.items} islands training questions per mode, {args.in_flight} in flight;",
        "s/request = batch wall time / requests (throughput at that concurrency). Projection: "
        f"{REQUESTS_PER_REPORT} strong requests (issue 19's n=100 report, before its DPO round) at the mean of the "
        "two modes.",
        "",
        "| config | mode | s/request | prompt tokens | of which cached | prompt tok/s | decoded | decode tok/s "
        "| report hours |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        mean_s = statistics.mean(m["s_per_request"] for m in res["modes"].values())
        res["report_hours"] = mean_s * REQUESTS_PER_REPORT / 3600
        for mode, m in res["modes"].items():
            lines.append(
                f"| {res['config']} ({res['threads']} thread(s), core(s) {res['cores']}) | {mode} "
                f"| {m['s_per_request']:.1f} | {m['prompt_tokens']:.0f} | {m['prompt_cached']:.0f} "
                f"| {m['prompt_tok_s']:.1f} | {m['decoded']:.0f} | {m['decode_tok_s']:.1f} "
                f"| {res['report_hours']:.1f} |"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
