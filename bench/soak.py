"""Soak: minutes of mixed traffic through one orchestrator process; its RSS and open file descriptors over time.

Traffic, all at once: /v1/collaborate + feedback, chat completions (non-streaming), streaming chat read at full
speed, streaming chat read slowly (a client that sleeps between chunks), and streams abandoned after the first
chunk. Upstreams are fakes in their own process (instant, streaming or not); Redis is real. Sampled every 10 s;
the verdict compares the last minute with the minute after warm-up.

    .venv/bin/python bench/soak.py [--minutes 10] [--out bench/results/soak.md]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from orchestrator_overhead import free_port, spawn, wait_up  # noqa: E402

FAKE = """
import asyncio, json
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route
USAGE = {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}
async def chat(request):
    body = await request.json()
    if body.get("stream"):
        async def events():
            for word in "a fake answer in eight words for you".split():
                chunk = {"id": "x", "object": "chat.completion.chunk", "model": "fake",
                         "choices": [{"index": 0, "delta": {"content": word + " "}}]}
                yield f"data: {json.dumps(chunk)}\\n\\n"
                await asyncio.sleep(0.01)
            yield f"data: {json.dumps({'choices': [], 'usage': USAGE})}\\n\\ndata: [DONE]\\n\\n"
        return StreamingResponse(events(), media_type="text/event-stream")
    return JSONResponse({"id": "x", "object": "chat.completion", "model": "fake", "usage": USAGE,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}]})
async def models(request):
    return JSONResponse({"object": "list", "data": [{"id": "fake"}]})
app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models)])
"""

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


async def client(kind: str, url: str, stop: float, counts: Counter) -> None:
    async with httpx.AsyncClient(timeout=60) as c:
        while time.monotonic() < stop:
            try:
                if kind == "collaborate":
                    r = await c.post(f"{url}/v1/collaborate", json={"question": "Why is the sky blue?"})
                    trace = r.json()["id"]
                    await c.post(f"{url}/v1/feedback", json={"id": trace, "score": 1.0})
                elif kind == "chat":
                    r = await c.post(f"{url}/v1/chat/completions", json={"model": "cowest", "messages": MESSAGES})
                    r.raise_for_status()
                else:
                    body = {"model": "cowest", "messages": MESSAGES, "stream": True}
                    async with c.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
                        async for i, _ in _enumerate(r.aiter_lines()):
                            if kind == "abandon" and i >= 1:
                                break  # the client goes away mid-stream
                            if kind == "slow":
                                await asyncio.sleep(0.5)
                counts[kind] += 1
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                counts[f"{kind} error: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.1)


async def _enumerate(it):
    i = 0
    async for x in it:
        yield i, x
        i += 1


async def run(args) -> str:
    work = tempfile.mkdtemp()
    Path(work, "fake_upstream.py").write_text(FAKE)
    up_port, orch_port = free_port(), free_port()
    uv = [sys.executable, "-m", "uvicorn", "--log-level", "warning", "--no-access-log", "--port", str(up_port)]
    procs = [spawn(uv + ["fake_upstream:app"], {}, work)]
    env = {
        "COWEST_ORCH_PORT": str(orch_port),
        "COWEST_WEAK_URL": f"http://127.0.0.1:{up_port}/v1",
        "COWEST_STRONG_URL": f"http://127.0.0.1:{up_port}/v1",
        "COWEST_WEAK_MODEL": "fake",
        "COWEST_STRONG_MODEL": "fake",
        "COWEST_ORCH_SPOOL_PATH": f"{work}/spool.jsonl",
        "COWEST_ORCH_DRAFT_POLICY": "always",
        "COWEST_HOME": work,
    }
    code = (
        "import uvicorn; from services.orchestrator.app import create_app; "
        f"uvicorn.run(create_app(), port={orch_port}, log_level='warning', access_log=False)"
    )
    orch = spawn([sys.executable, "-c", code], env, str(Path(__file__).resolve().parent.parent))
    procs.append(orch)
    samples: list[tuple[float, float, int]] = []  # (minutes, RSS MiB, open fds)
    counts: Counter = Counter()
    try:
        await wait_up(f"http://127.0.0.1:{up_port}/v1/models")
        await wait_up(f"http://127.0.0.1:{orch_port}/healthz")
        proc = psutil.Process(orch.pid)
        url = f"http://127.0.0.1:{orch_port}"
        t0 = time.monotonic()
        stop = t0 + args.minutes * 60
        kinds = ["collaborate"] * 2 + ["chat"] * 2 + ["stream"] * 2 + ["slow"] * 4 + ["abandon"]
        tasks = [asyncio.create_task(client(k, url, stop, counts)) for k in kinds]
        while time.monotonic() < stop:
            samples.append(((time.monotonic() - t0) / 60, proc.memory_info().rss / 2**20, proc.num_fds()))
            await asyncio.sleep(10)
        await asyncio.gather(*tasks)
        samples.append(((time.monotonic() - t0) / 60, proc.memory_info().rss / 2**20, proc.num_fds()))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
    warm = [s for s in samples if 1.0 <= s[0] < 2.0] or samples[:1]
    last = [s for s in samples if s[0] >= samples[-1][0] - 1.0]
    rss_warm, rss_last = max(s[1] for s in warm), max(s[1] for s in last)
    fds = [s[2] for s in samples[1:]] or [samples[0][2]]
    lines = [
        f"# Orchestrator soak ({time.strftime('%Y-%m-%d')})",
        "",
        f"Command: `.venv/bin/python bench/soak.py --minutes {args.minutes}`  ",
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, no GPU; fake upstreams in their own process, real "
        "Redis; one orchestrator process; 11 concurrent clients (2 collaborate + feedback, 2 chat, 2 streaming, "
        "4 slow stream readers, 1 stream abandoned after its first chunk).",
        "",
        "| requests | count |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in sorted(counts.items())],
        "",
        "| measure | value |",
        "|---|---|",
        f"| RSS, max in minute 1-2 (MiB) | {rss_warm:.1f} |",
        f"| RSS, max in the last minute (MiB) | {rss_last:.1f} |",
        f"| RSS growth after warm-up (MiB) | {rss_last - rss_warm:+.1f} |",
        f"| open fds, min / max after the first sample | {min(fds)} / {max(fds)} |",
        "",
        "Samples (minute, RSS MiB, fds): " + ", ".join(f"({m:.1f}, {r:.0f}, {f})" for m, r, f in samples),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--out", default="bench/results/soak.md")
    args = ap.parse_args()
    report = asyncio.run(run(args))
    Path(args.out).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
