"""The paper's step 1: LoRA SFT of the weak model on a domain's training data, giving the domain its
first adapter (registered as version kind `sft`, then made active).

The target is the draft the weak model should learn to write: the rationale (the relevant knowledge and
the reasoning) then `Answer: <answer>`; rows without a rationale fall back to the answer alone. The
prompt is the serving prompt (shared/prompts.py), so the adapter is trained on what it will see.
"""

from __future__ import annotations

import json
import math
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.trainer.jobs import JobConfig
from services.trainer.registry import AdapterManifest, AdapterRegistry
from services.trainer.rounds import run_job
from services.trainer.swap import AdapterSwapper
from shared.cpu import has_bf16
from shared.knowledge import FactIndex, Knowledge, Lookup, derive_facts
from shared.prompts import get_domain, weak_messages


@dataclass
class SftResult:
    adapter: str
    metrics: dict  # the job's metrics.json: per-step loss, seconds per step, peak RSS
    swap_seconds: float


def sft_target(row: dict) -> str:
    answer = row["answer"] if isinstance(row["answer"], str) else row["answer"][0]
    rationale = (row.get("rationale") or "").strip()
    return f"{rationale}\nAnswer: {answer}" if rationale else f"Answer: {answer}"


def missing_target(lookup: Lookup) -> str:
    """What the draft says when the lookup found no fact about the question's items: it names them and answers
    nothing, so the strong model knows the draft has no fact to give (never another item's fact rewritten)."""
    return f"The facts given say nothing about {', '.join(lookup.missing)}.\nAnswer: unknown"


def lookups(rows: list[dict], knowledge: Knowledge, top_k: int, missing_fraction: float, seed: int = 0) -> list:
    """Each row's lookup as serving will make it. A seeded `missing_fraction` of the rows look up in the knowledge
    without their own statements (what a question whose fact is not in the knowledge gets), when that leaves one
    of their names unknown: those rows teach the draft to say the fact is missing."""
    index = FactIndex(knowledge)
    rng = random.Random(seed)
    out: list = []
    for row in rows:
        lookup = index.search(row["question"], top_k)
        if rng.random() < missing_fraction:
            own = set(derive_facts([row]))
            without = FactIndex(Knowledge(tuple(f for f in knowledge.facts if f not in own), knowledge.source))
            alt = without.search(row["question"], top_k)
            if own and alt.missing:
                out.append((alt, missing_target(alt)))
                continue
        out.append((lookup, None))
    return out


def write_sft_data(
    rows: list[dict],
    domain: str,
    path: Path,
    knowledge: Knowledge | None = None,
    missing_fraction: float = 0.0,
) -> dict:
    """Conversational prompt -> completion rows, as trl's SFTTrainer reads them; with `knowledge`, each prompt
    carries the row's lookup (the adapter learns to draft from looked-up facts). Returns counts for the report."""
    spec = get_domain(domain)
    looked = (
        lookups(rows, knowledge, spec.knowledge.top_k, missing_fraction)
        if knowledge is not None
        else [(None, None)] * len(rows)
    )
    with path.open("w") as f:
        for row, (lookup, target) in zip(rows, looked, strict=True):
            prompt = weak_messages(row["question"], domain, row.get("context"), spec.draft_format, lookup=lookup)
            completion = [{"role": "assistant", "content": target or sft_target(row)}]
            f.write(json.dumps({"prompt": prompt, "completion": completion}) + "\n")
    return {"rows": len(rows), "missing_rows": sum(t is not None for _, t in looked)}


# Facts live in the MLPs: LoRA on attention alone barely moved SmolLM2's loss on the synthetic company's
# facts (2.75 -> 1.80 in 60 steps at 2e-4); on every linear layer at 1e-3 it reached 0.28 in 33 steps.
SFT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def hold_out(
    rows: list[dict], n: int, can_hold: Callable[[dict], bool] = lambda row: True, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """(train rows, stop-rule rows): a seeded sample of at most `n` rows that `can_hold` allows (at most half of
    them: the rest must teach), the others for training."""
    pool = [r for r in rows if can_hold(r)]
    held = random.Random(seed).sample(pool, min(n, len(pool) // 2))
    ids = {id(r) for r in held}
    return [r for r in rows if id(r) not in ids], held


def sft_steps(rows: int, epochs: float, batch_size: int, max_steps: int | None) -> int:
    """Steps for `epochs` passes over `rows` (at least one step), at most `max_steps`."""
    steps = max(1, math.ceil(epochs * rows / batch_size))
    return min(steps, max_steps) if max_steps else steps


async def train_sft_adapter(
    rows: list[dict],
    domain: str,
    registry: AdapterRegistry,
    swapper: AdapterSwapper,
    base_model: str,
    base_model_dir: Path,
    steps: int | None = 60,
    learning_rate: float = 1e-3,
    batch_size: int = 4,
    lora_r: int = 16,
    threads: int = 1,
    activate: bool = True,
    epochs: float | None = None,
    stop_rows: list[dict] | None = None,
    eval_steps: int = 15,
    patience: int = 2,
    bf16: bool | None = None,
    knowledge: Knowledge | None = None,
    missing_fraction: float = 0.1,
) -> SftResult:
    """Train, register and (by default) activate the domain's SFT adapter. Length: `epochs` passes over the rows
    (at most `steps`), or `steps`. `stop_rows` (held out from `rows`: new questions about the same facts) turn
    on the stop rule: held-out loss every `eval_steps`, stop after `patience` evaluations without a new best,
    keep the best. `threads`: 2 only when the model servers are idle (the demo trains before any traffic).
    `bf16` (None: where the CPU has native bf16) autocasts the matmuls: 0.76x the time per step at the same
    held-out loss within 1.5% (bench/results/sft_precision.md). `knowledge`: train on prompts that carry each
    row's lookup in it (`missing_fraction` of the rows without their own facts: see `lookups`), and version the
    adapter with it; None: the facts must go into the weights."""
    if not rows:
        raise ValueError(f"no training rows for {domain}")
    max_steps = sft_steps(len(rows), epochs, batch_size, steps) if epochs else steps
    with tempfile.TemporaryDirectory(prefix=f"cowest-sft-{domain}-") as tmp:  # the registry keeps a copy
        work = Path(tmp)
        data = write_sft_data(rows, domain, work / "sft.jsonl", knowledge, missing_fraction)
        if stop_rows:
            write_sft_data(stop_rows, domain, work / "stop.jsonl", knowledge)
        cfg = JobConfig(
            base_model_dir=str(base_model_dir),
            data_file=str(work / "sft.jsonl"),
            output_dir=str(work / "adapter"),
            max_steps=max_steps or 60,
            learning_rate=learning_rate,
            batch_size=batch_size,
            lora_r=lora_r,
            lora_alpha=2 * lora_r,
            target_modules=SFT_TARGETS,
            threads=threads,
            eval_file=str(work / "stop.jsonl") if stop_rows else None,
            eval_steps=eval_steps,
            patience=patience,
            bf16=has_bf16() if bf16 is None else bf16,
        )
        metrics = await run_job("sft", cfg)
        manifest: AdapterManifest = registry.register(
            work / "adapter",
            domain=domain,
            base_model=base_model,
            base_model_path=base_model_dir,
            parent=None,
            round=0,
            pairs=None,
            kind="sft",
            metrics={"final_loss": metrics["loss"][-1]} if metrics["loss"] else {},
            knowledge=knowledge,
        )
        metrics["data"] = data
    seconds = await swapper.activate(domain, manifest.name) if activate else 0.0
    return SftResult(manifest.name, metrics, seconds)
