"""DPO seconds per step and peak memory on the real weak model (SmolLM2-135M-Instruct), CPU, 1 thread.

Pairs are CoWest-shaped: the weak prompt from shared/prompts.py with a CoT draft as chosen/rejected
(~100-150 tokens each), or any pairs file (`--data`, the trainer's {prompt, chosen, rejected} JSONL), optionally
continuing an adapter as a round does (`--init-adapter`). Runs the same job the trainer runs
(services/trainer/jobs.py) in a child process, once per `--micro-batch` value, back to back.

    .venv/bin/python bench/dpo_step.py [--steps 6] [--threads 1] [--micro-batch 4,2,1] [--data F --init-adapter D]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from services.trainer.jobs import JobConfig
from shared.config import CowestSettings
from shared.prompts import weak_messages

DRAFT = (
    "The question asks about {topic}. The relevant knowledge: {fact} Reasoning step by step, the key point "
    "is that {fact_lower} Therefore the answer follows directly.\nAnswer: {answer}"
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--micro-batch", default="4", help="pairs per forward pass, comma-separated: one run each")
    ap.add_argument("--data", type=Path, help="pairs JSONL (default: generated CoT-draft pairs)")
    ap.add_argument("--init-adapter", type=Path, help="continue this adapter (its LoRA shape), as a round does")
    ap.add_argument("--out", default="bench/results/dpo_step.md")
    args = ap.parse_args()
    base = CowestSettings().models_dir / "SmolLM2-135M-Instruct"
    work = Path(tempfile.mkdtemp())
    rows = []
    for i in range(16):
        topic, fact, answer = f"item {i}", f"Part {i} weighs {i * 3} kg and ships from plant {i % 4}.", f"{i * 3} kg"
        good = DRAFT.format(topic=topic, fact=fact, fact_lower=fact.lower(), answer=answer)
        bad = DRAFT.format(
            topic=topic, fact="Parts usually weigh about the same.", fact_lower="parts are similar.", answer="unknown"
        )
        rows.append(
            {
                "prompt": weak_messages(f"How much does part {i} weigh?", "general"),
                "chosen": [{"role": "assistant", "content": good}],
                "rejected": [{"role": "assistant", "content": bad}],
            }
        )
    (work / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = args.data or work / "pairs.jsonl"
    n_pairs = sum(1 for line in data.read_text().splitlines() if line.strip())
    table = []
    for micro in [int(m) for m in args.micro_batch.split(",")]:
        out = work / f"out-{micro}"
        cfg = JobConfig(
            base_model_dir=str(base),
            data_file=str(data),
            output_dir=str(out),
            max_steps=args.steps,
            threads=args.threads,
            micro_batch_size=micro,
            init_adapter=str(args.init_adapter) if args.init_adapter else None,
        )
        cfg.save(work / "job.json")
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "services.trainer.jobs", "dpo", str(work / "job.json")],
            check=True,
            capture_output=True,
        )
        wall = time.perf_counter() - t0
        m = json.loads((out / "metrics.json").read_text())
        table.append(
            f"| {micro} | {m['steps']} | {m['seconds_per_step']:.2f} | {m['peak_rss_mib']:.0f} | {wall:.1f} | "
            f"{m['loss'][0]:.4f} -> {m['loss'][-1]:.4f} | {m['reward_margin'][-1]:.4f} |"
        )
        print(table[-1], flush=True)
    pairs = f"{n_pairs} pairs from {args.data.name}" if args.data else f"{n_pairs} CoT-draft pairs"
    lora = f"continuing {args.init_adapter.name}" if args.init_adapter else f"LoRA r={cfg.lora_r} on q/k/v/o"
    report = "\n".join(
        [
            f"# DPO step time, SmolLM2-135M-Instruct ({time.strftime('%Y-%m-%d')})",
            "",
            f"Command: `.venv/bin/python bench/{' '.join([Path(sys.argv[0]).name] + sys.argv[1:])}`  ",
            f"Machine: {os.cpu_count()} cores, {platform.machine()}, no GPU; fp32, {lora}, "
            f"batch {cfg.batch_size}, {pairs}, torch threads {args.threads}.",
            "",
            "| micro-batch | steps | seconds per step | peak RSS (MiB) | job wall incl. model load (s) | loss first -> last "
            "| reward margin last |",
            "|---|---|---|---|---|---|---|",
            *table,
            "",
        ]
    )
    Path(args.out).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
