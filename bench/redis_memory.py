"""What a day of traffic costs in Redis, per kind of key, measured on a real redis-server.

Per served answer the stack keeps: the trace in the `cowest:traces` stream (until the trainer acknowledged it and
`COWEST_TRAINER_STREAM_RETENTION_S` passed: 1 day by default), its id key (`cowest:logged:<id>`, 7 days: what tells
a feedback's trace apart from an unknown id), and the trainer's copy of what joining a feedback needs
(`COWEST_TRAINER_TRACE_KEEP_S`, 7 days by default). This writes N realistic traces through the same code paths
(the orchestrator's TraceLog, the trainer's store) into a private redis-server and reads `used_memory` before and
after each kind, then projects 100 requests/s.

    .venv/bin/python bench/redis_memory.py [--n 20000] [--rate 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis as redis_sync

from cowest.redis_server import redis_server_binary
from services.orchestrator.tracelog import TraceLog
from services.trainer.collector import JOIN_FIELDS
from services.trainer.store import TrainerStore
from shared import redis_keys
from shared.cpu import cpu_summary
from shared.records import TraceRecord, Usage

DAY = 24 * 3600


def trace(i: int) -> TraceRecord:
    """A trace as the islands domain writes one: a ~200-character question, a ~600-character draft, an answer."""
    usage = Usage(prompt_tokens=900, completion_tokens=120, total_tokens=1020)
    return TraceRecord(
        trace_id=f"tr-{i:032x}",
        domain="islands",
        draft_format="cot",
        question=f"For how many whole days does the water reserve of Settlement{i} last if 60 more residents move there?"
        + " " * 100,
        draft="Tarnsund has 440 residents and a water reserve of 3300 kilolitres; " * 9,
        answer="Work: 500 residents use 75000 litres a day.\nCalc: floor(3300000 / 75000)\nAnswer: 44 days" * 3,
        weak_model="SmolLM2-135M-Instruct",
        weak_adapter="islands-v1",
        strong_model="Qwen2.5-Coder-1.5B-Instruct",
        weak_latency_ms=812.0,
        strong_latency_ms=36412.0,
        latency_ms=37301.0,
        weak_usage=usage,
        strong_usage=usage,
        request_id=f"req-{i:032x}",
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_ping(client: redis_sync.Redis) -> None:
    for _ in range(200):
        try:
            client.ping()
            return
        except redis_sync.ConnectionError:
            time.sleep(0.05)
    client.ping()


def used(client: redis_sync.Redis) -> int:
    return int(client.info("memory")["used_memory"])


async def measure(url: str, client: redis_sync.Redis, n: int, spool: Path) -> dict[str, float]:
    redis = redis_keys.connect(url)
    log = TraceLog(redis, spool)
    store = TrainerStore(redis)
    per: dict[str, float] = {}
    try:
        before = used(client)
        for i in range(n):
            await log.log_trace(trace(i))  # the stream entry and its id key
        stream_and_ids = used(client) - before
        before = used(client)
        await redis.delete(redis_keys.TRACES_STREAM)
        per["stream"] = (before - used(client)) / n  # what deleting the stream gave back
        per["logged_id"] = stream_and_ids / n - per["stream"]
        for kind, dump in (
            ("trainer_copy_full", lambda t: t.model_dump_json()),
            ("trainer_copy_joined", lambda t: json.dumps({f: getattr(t, f) for f in JOIN_FIELDS} | {"drafted": True})),
        ):
            before = used(client)
            for i in range(n):
                t = trace(i)
                await store.remember_trace(f"{kind}-{t.trace_id}", dump(t))
            per[kind] = (used(client) - before) / n
    finally:
        log.close()
        await redis.aclose()
    return per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second to project")
    parser.add_argument("--out", type=Path, default=Path("bench/results/redis_memory.md"))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="redis-memory-"))
    port = free_port()
    server = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis_sync.Redis(port=port)
        wait_for_ping(client)
        per = asyncio.run(measure(f"redis://127.0.0.1:{port}/0", client, args.n, tmp / "spool.jsonl"))
    finally:
        server.terminate()
        server.wait(10)
    daily = args.rate * DAY
    keep = {"stream": 1, "logged_id": 7, "trainer_copy_full": 7, "trainer_copy_joined": 7}  # days, by default
    rows = {k: {"bytes_per_trace": v, "gb_per_day": v * daily / 1e9, "days_kept": keep[k]} for k, v in per.items()}
    for row in rows.values():
        row["gb_held"] = row["gb_per_day"] * row["days_kept"]
    total_before = sum(rows[k]["gb_held"] for k in ("stream", "logged_id", "trainer_copy_full"))
    total_now = sum(rows[k]["gb_held"] for k in ("stream", "logged_id", "trainer_copy_joined"))
    lines = [
        "# Redis memory per day of traffic",
        "",
        f"`.venv/bin/python bench/redis_memory.py --n {args.n} --rate {args.rate:g}`",
        "",
        f"Machine: {platform.node()}, {cpu_summary()}. {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"{args.n} islands-sized traces (question ~300 characters, draft ~600, answer ~270, usage and latencies) "
        f"written through the orchestrator's TraceLog and the trainer's store; `used_memory` deltas. Projection: "
        f"{args.rate:g} requests/s = {daily / 1e6:.2f} M traces a day, each kind kept its default time.",
        "",
        "| what | bytes / trace | GB / day | kept (days) | GB held |",
        "|---|---|---|---|---|",
    ]
    for kind, row in rows.items():
        lines.append(
            f"| {kind} | {row['bytes_per_trace']:.0f} | {row['gb_per_day']:.1f} | {row['days_kept']} "
            f"| {row['gb_held']:.1f} |"
        )
    lines += [
        "",
        f"Held at {args.rate:g} requests/s with the defaults: **{total_now:.0f} GB** (the trainer keeping only what "
        f"joining a feedback needs) vs {total_before:.0f} GB with its old full copy. `COWEST_TRAINER_TRACE_KEEP_S` "
        "(feedback later than that cannot become pairs) and `COWEST_TRAINER_STREAM_RETENTION_S` bound it; size Redis "
        "(maxmemory, never an eviction policy: evicting would lose logged traces and feedback) from this table.",
    ]
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"n": args.n, "rate": args.rate, "rows": rows}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
