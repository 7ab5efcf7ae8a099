"""DPO seconds per step and peak memory on the real weak model (SmolLM2-135M-Instruct), CPU, 1 thread.

Pairs are CoWest-shaped: the weak prompt from shared/prompts.py with a CoT draft as chosen/rejected
(~100-150 tokens each). Runs the same job the trainer runs (services/trainer/jobs.py) in a child process.

    .venv/bin/python bench/dpo_step.py [--steps 6] [--threads 1]
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

DRAFT = ("The question asks about {topic}. The relevant knowledge: {fact} Reasoning step by step, the key point "
         "is that {fact_lower} Therefore the answer follows directly.\nAnswer: {answer}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="bench/results/dpo_step.md")
    args = ap.parse_args()
    base = CowestSettings().models_dir / "SmolLM2-135M-Instruct"
    work = Path(tempfile.mkdtemp())
    rows = []
    for i in range(16):
        topic, fact, answer = f"item {i}", f"Part {i} weighs {i * 3} kg and ships from plant {i % 4}.", f"{i * 3} kg"
        good = DRAFT.format(topic=topic, fact=fact, fact_lower=fact.lower(), answer=answer)
        bad = DRAFT.format(topic=topic, fact="Parts usually weigh about the same.", fact_lower="parts are similar.",
                           answer="unknown")
        rows.append({"prompt": weak_messages(f"How much does part {i} weigh?", "general"),
                     "chosen": [{"role": "assistant", "content": good}],
                     "rejected": [{"role": "assistant", "content": bad}]})
    (work / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = JobConfig(base_model_dir=str(base), data_file=str(work / "pairs.jsonl"), output_dir=str(work / "out"),
                    max_steps=args.steps, threads=args.threads)
    cfg.save(work / "job.json")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "services.trainer.jobs", "dpo", str(work / "job.json")], check=True,
                   capture_output=True)
    wall = time.perf_counter() - t0
    m = json.loads((work / "out" / "metrics.json").read_text())
    report = "\n".join([
        f"# DPO step time, SmolLM2-135M-Instruct ({time.strftime('%Y-%m-%d')})", "",
        f"Command: `.venv/bin/python bench/dpo_step.py --steps {args.steps} --threads {args.threads}`  ",
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, no GPU; fp32, LoRA r={cfg.lora_r} on q/k/v/o, "
        f"batch {cfg.batch_size}, {len(rows)} CoT-draft pairs, torch threads {args.threads}.", "",
        "| steps | seconds per step | peak RSS (MiB) | job wall incl. model load (s) | loss first -> last | reward margin last |",
        "|---|---|---|---|---|---|",
        f"| {m['steps']} | {m['seconds_per_step']:.2f} | {m['peak_rss_mib']:.0f} | {wall:.1f} | "
        f"{m['loss'][0]:.4f} -> {m['loss'][-1]:.4f} | {m['reward_margin'][-1]:.4f} |", ""])
    Path(args.out).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
