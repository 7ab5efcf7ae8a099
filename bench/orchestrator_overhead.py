"""Orchestrator overhead: what the orchestrator adds on top of its two upstream calls.

Instant fake upstreams (a canned OpenAI-compatible reply, in their own process) isolate the
orchestrator's own cost: routing, validation, prompt building, two pooled HTTP hops, the Redis XADD
of the trace, JSON. Per request, overhead = client-observed latency - (weak + strong upstream time
as the orchestrator measured it). The baseline, run back to back in the same script, is the client
calling the two fake upstreams directly: the ratio says how much slower one collaboration is than
two bare model calls.

Peers, one hop each (the orchestrator makes two per collaboration), measured in the same run against the same
fake upstream: a raw relay (Starlette + one pooled httpx client: the floor of a Python proxy) and, with
`--litellm PATH` (the `litellm` executable of a venv holding `litellm[proxy]`), LiteLLM's proxy.

    .venv/bin/python bench/orchestrator_overhead.py [--requests 400] [--concurrency 16] [--litellm PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

FAKE = """
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
BODY = {"id": "x", "object": "chat.completion", "model": "fake",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
async def chat(request):
    await request.body()
    return JSONResponse(BODY)
async def models(request):
    return JSONResponse({"object": "list", "data": [{"id": "fake"}]})
app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models)])
"""

RELAY = """
import os
import httpx
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
UPSTREAM = os.environ["RELAY_UPSTREAM"]
client = httpx.AsyncClient(limits=httpx.Limits(max_connections=256, max_keepalive_connections=256))
async def chat(request):
    r = await client.post(UPSTREAM + "/v1/chat/completions", content=await request.body(),
                          headers={"content-type": "application/json"})
    return Response(r.content, status_code=r.status_code, media_type="application/json")
async def models(request):
    return Response(b'{"object": "list", "data": []}', media_type="application/json")
app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models)])
"""

BENCH_KEY = "sk-" + secrets.token_hex(32)  # LiteLLM refuses to start without a master key; the others ignore it
LITELLM_CONFIG = """
model_list:
  - model_name: fake
    litellm_params: {{model: openai/fake, api_base: "http://127.0.0.1:{port}/v1", api_key: x}}
litellm_settings: {{telemetry: false, drop_params: true}}
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(argv: list[str], env: dict[str, str], cwd: str) -> subprocess.Popen:
    return subprocess.Popen(
        argv, env={**os.environ, **env}, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def wait_up(url: str, tries: int = 200) -> None:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {BENCH_KEY}"}) as c:
        for _ in range(tries):
            try:
                if (await c.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live children (the workers, with `--workers N`)."""
    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    return sum(t.user + t.system for t in (p.cpu_times() for p in procs))


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def run(args) -> str:
    work = tempfile.mkdtemp()
    Path(work, "fake_upstream.py").write_text(FAKE)
    Path(work, "relay.py").write_text(RELAY)
    weak_port, strong_port, orch_port, relay_port = free_port(), free_port(), free_port(), free_port()
    uv = [sys.executable, "-m", "uvicorn", "--log-level", "warning", "--no-access-log", "--port"]
    procs = [spawn(uv + [str(weak_port), "fake_upstream:app"], {}, work)]
    procs.append(spawn(uv + [str(strong_port), "fake_upstream:app"], {}, work))
    relay_env = {"RELAY_UPSTREAM": f"http://127.0.0.1:{weak_port}"}
    procs.append(spawn(uv + [str(relay_port), "relay:app"], relay_env, work))
    hops = {"raw relay (Starlette + httpx)": relay_port}
    if args.litellm:
        litellm_port = free_port()
        Path(work, "litellm.yaml").write_text(LITELLM_CONFIG.format(port=weak_port))
        litellm_env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": BENCH_KEY}
        argv = [args.litellm, "--config", f"{work}/litellm.yaml", "--port", str(litellm_port), "--num_workers", "1"]
        procs.append(spawn(argv, litellm_env, work))
        hops[f"LiteLLM proxy {args.litellm_version}"] = litellm_port
    env = {
        "COWEST_ORCH_PORT": str(orch_port),
        "COWEST_WEAK_URL": f"http://127.0.0.1:{weak_port}/v1",
        "COWEST_STRONG_URL": f"http://127.0.0.1:{strong_port}/v1",
        "COWEST_WEAK_MODEL": "fake",
        "COWEST_STRONG_MODEL": "fake",
        "COWEST_ORCH_SPOOL_PATH": f"{work}/spool.jsonl",
        "COWEST_ORCH_DRAFT_POLICY": "always",  # both stages on every request, as for a domain with an adapter
    }
    env |= {"COWEST_ORCH_WORKERS": str(args.workers), "COWEST_ORCH_ACCESS_LOG": "false", "COWEST_HOME": work}
    # As a user runs it (`python -m services.orchestrator.app`), without the access log.
    orch_proc = spawn([sys.executable, "-m", "services.orchestrator.app"], env, str(Path(__file__).parents[1]))
    procs.append(orch_proc)
    try:
        for port, path in ((weak_port, "/v1/models"), (strong_port, "/v1/models"), (orch_port, "/healthz")):
            await wait_up(f"http://127.0.0.1:{port}{path}")
        for port in hops.values():
            await wait_up(f"http://127.0.0.1:{port}/v1/models", tries=1200)
        orch = f"http://127.0.0.1:{orch_port}"
        body = {"question": "What is the capital of France?"}
        chat = {"model": "fake", "messages": [{"role": "user", "content": "What is the capital of France?"}]}
        auth = {"Authorization": f"Bearer {BENCH_KEY}"}
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64), headers=auth) as c:

            async def direct() -> float:  # the baseline: the two model calls without the orchestrator
                t0 = time.perf_counter()
                await c.post(f"http://127.0.0.1:{weak_port}/v1/chat/completions", json=chat)
                await c.post(f"http://127.0.0.1:{strong_port}/v1/chat/completions", json=chat)
                return (time.perf_counter() - t0) * 1000

            async def collab() -> tuple[float, float]:
                t0 = time.perf_counter()
                r = (await c.post(f"{orch}/v1/collaborate", json=body)).json()
                total = (time.perf_counter() - t0) * 1000
                return total, total - r["weak"]["latency_ms"] - r["strong"]["latency_ms"]

            for _ in range(50):  # warm up both paths
                await direct()
                await collab()
            base = [await direct() for _ in range(args.requests)]
            seq = [await collab() for _ in range(args.requests)]
            sem = asyncio.Semaphore(args.concurrency)

            async def limited():
                async with sem:
                    return await collab()

            t0, cpu0 = time.perf_counter(), cpu_seconds(orch_proc.pid)
            conc = await asyncio.gather(*(limited() for _ in range(args.requests)))
            conc_s = time.perf_counter() - t0
            # What one orchestrator process can carry, whatever else shares the cores (the client, the fakes and
            # Redis here): its own CPU time per collaboration. 1000 / that = collaborations/s per busy core.
            cpu_ms = (cpu_seconds(orch_proc.pid) - cpu0) * 1000 / args.requests

            async def one(port: int) -> float:  # one chat call, directly (port = the fake) or through a proxy
                t0 = time.perf_counter()
                r = await c.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=chat)
                r.raise_for_status()
                return (time.perf_counter() - t0) * 1000

            peer_rows = []
            for name, port in hops.items():
                for _ in range(50):
                    await one(weak_port)
                    await one(port)
                # Interleaved, so that both see the same machine state.
                pairs = [(await one(weak_port), await one(port)) for _ in range(args.requests)]
                over = [via - direct for direct, via in pairs]

                async def limited_hop(port: int = port) -> float:
                    async with sem:
                        return await one(port)

                t1 = time.perf_counter()
                await asyncio.gather(*(limited_hop() for _ in range(args.requests)))
                rate = args.requests / (time.perf_counter() - t1)
                peer_rows.append((name, pct(over, 50), pct(over, 99), rate))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
    totals, overheads = [t for t, _ in seq], [o for _, o in seq]
    conc_over = [o for _, o in conc]
    lines = [
        f"# Orchestrator overhead ({time.strftime('%Y-%m-%d')})",
        "",
        f"Command: `.venv/bin/python bench/orchestrator_overhead.py --requests {args.requests} "
        f"--concurrency {args.concurrency} --workers {args.workers}"
        + (" --litellm PATH" if args.litellm else "")
        + "`  ",
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, no GPU; instant fake upstreams in their own "
        "processes; real Redis (trace XADD on every request); orchestrator in its own process.",
        "",
        "| measure | p50 (ms) | p99 (ms) |",
        "|---|---|---|",
        f"| baseline: client calls weak + strong directly | {pct(base, 50):.2f} | {pct(base, 99):.2f} |",
        f"| /v1/collaborate total, sequential | {pct(totals, 50):.2f} | {pct(totals, 99):.2f} |",
        f"| overhead = total - upstream time, sequential | {pct(overheads, 50):.2f} | {pct(overheads, 99):.2f} |",
        f"| overhead, {args.concurrency} concurrent | {pct(conc_over, 50):.2f} | {pct(conc_over, 99):.2f} |",
        "",
        f"Collaboration / direct baseline (p50): {statistics.median(totals) / statistics.median(base):.2f}x. "
        f"Throughput at {args.concurrency} concurrent: {args.requests / conc_s:.0f} collaborations/s "
        f"({args.workers} orchestrator worker process(es)). Orchestrator CPU per collaboration: {cpu_ms:.2f} ms "
        f"(= {1000 / cpu_ms:.0f} collaborations/s per fully busy core).",
        "",
        "Per hop, against peers (same fake upstream, same run; the orchestrator makes two hops per collaboration,"
        " plus its Redis XADD):",
        "",
        f"| one hop through | overhead p50 (ms) | overhead p99 (ms) | requests/s at {args.concurrency} concurrent |",
        "|---|---|---|---|",
        f"| CoWest orchestrator (collaboration overhead / 2) | {pct(overheads, 50) / 2:.2f} | "
        f"{pct(overheads, 99) / 2:.2f} | {2 * args.requests / conc_s:.0f} (upstream calls/s) |",
    ]
    lines += [f"| {name} | {p50:.2f} | {p99:.2f} | {rate:.0f} |" for name, p50, p99, rate in peer_rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--out", default="bench/results/orchestrator_overhead.md")
    ap.add_argument("--workers", type=int, default=1, help="orchestrator worker processes")
    ap.add_argument("--litellm", default=None, help="the litellm executable of a venv with litellm[proxy]")
    args = ap.parse_args()
    args.litellm_version = ""
    if args.litellm:
        pip = Path(args.litellm).with_name("pip")
        shown = subprocess.run([str(pip), "show", "litellm"], capture_output=True, text=True).stdout
        args.litellm_version = next((line.split()[1] for line in shown.splitlines() if line.startswith("Version")), "")
    report = asyncio.run(run(args))
    Path(args.out).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
