"""SFT in fp32 vs bf16 autocast on the real weak model (SmolLM2-135M-Instruct), back to back, same rows and seed.

The demo's SFT job (services/trainer/jobs.py, LoRA r=16 on every linear layer, lr 1e-3, batch 4) on the synthetic
company's train split (seed 0, size 240) with the demo's 20 stop-rule rows held out: seconds per step, the train
loss, and the held-out loss every `--eval-steps` (the quality check: bf16 must not learn worse). bf16 autocast only
pays on a CPU with native bf16 (AVX512-BF16 / AMX); elsewhere it is emulated.

    .venv/bin/python bench/sft_precision.py [--steps 30] [--threads 2] [--eval-steps 10] [--out F]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from pathlib import Path

from services.trainer.jobs import JobConfig
from services.trainer.rounds import run_job
from services.trainer.sft import SFT_TARGETS, hold_out, write_sft_data
from shared.config import CowestSettings
from shared.cpu import cpu_summary
from shared.data.synthetic import generate, is_fact_card


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (2: the model servers must be idle)")
    ap.add_argument("--eval-steps", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("bench/results/sft_precision.md"))
    args = ap.parse_args()
    base = CowestSettings().models_dir / "SmolLM2-135M-Instruct"
    work = Path(tempfile.mkdtemp(prefix="sft-precision-"))
    rows = [e.model_dump() for e in generate(seed=0, size=240)["train"]]
    rows, held = hold_out(rows, 20, lambda r: not is_fact_card(r))  # as the demo does
    write_sft_data(rows, "synthetic", work / "sft.jsonl")
    write_sft_data(held, "synthetic", work / "stop.jsonl")
    table = []
    for bf16 in (False, True):
        out = work / f"out-{'bf16' if bf16 else 'fp32'}"
        cfg = JobConfig(
            base_model_dir=str(base),
            data_file=str(work / "sft.jsonl"),
            output_dir=str(out),
            max_steps=args.steps,
            learning_rate=1e-3,
            batch_size=4,
            lora_r=16,
            lora_alpha=32,
            target_modules=SFT_TARGETS,
            threads=args.threads,
            eval_file=str(work / "stop.jsonl"),
            eval_steps=args.eval_steps,
            patience=args.steps,
            bf16=bf16,
        )  # no early stop: same steps
        t0 = time.perf_counter()
        m = asyncio.run(run_job("sft", cfg))  # the trainer's own job runner: a child process, as in the demo
        wall = time.perf_counter() - t0
        evals = ", ".join(f"{e['loss']:.3f}" for e in m["eval_loss"])
        table.append(
            f"| {'bf16 autocast' if bf16 else 'fp32'} | {m['steps']} | {m['seconds_per_step']:.2f} | "
            f"{m['peak_rss_mib']:.0f} | {wall:.0f} | {m['loss'][0]:.3f} -> {m['loss'][-1]:.3f} | {evals} |"
        )
        print(table[-1], flush=True)
    report = "\n".join(
        [
            f"## SFT precision, SmolLM2-135M-Instruct ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
            "",
            f"Command: `.venv/bin/python bench/{' '.join([Path(sys.argv[0]).name] + sys.argv[1:])}`  ",
            (
                f"Machine: {platform.node()}, {cpu_summary()}, no GPU; {len(rows)} train rows, {len(held)} held out, "
                f"torch threads {args.threads}, model servers idle."
            ),
            "",
            (
                "| precision | steps | seconds per step | peak RSS (MiB) | job wall incl. load and evals (s) | train loss "
                f"first -> last | held-out loss every {args.eval_steps} steps |"
            ),
            "|---|---|---|---|---|---|---|",
            *table,
            "",
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        f.write(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
