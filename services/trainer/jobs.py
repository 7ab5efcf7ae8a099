"""Training jobs, each run in its own process so the trainer service stays responsive:

    python -m services.trainer.jobs dpo|sft JOB.json

DPO (trl DPOTrainer + peft LoRA on the weak base): when the round starts from an existing adapter,
trl freezes a copy of it as the `ref` adapter, so the reference is the adapter before the round;
with no adapter yet, the reference is the base model. SFT (trl SFTTrainer): LoRA on prompt ->
completion pairs, the paper's step 1 that gives a domain its first adapter. Writes the adapter and
`metrics.json` (per-step loss / reward margin, seconds per step, peak RSS) to `output_dir`.
"""

from __future__ import annotations

import json
import resource
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class JobConfig:
    base_model_dir: str
    data_file: str  # JSONL: DPO {prompt, chosen, rejected} or SFT {prompt, completion}, conversational
    output_dir: str
    init_adapter: str | None = None  # continue training this adapter (DPO: also the reference)
    max_steps: int = 20
    learning_rate: float = 5e-5  # trl's 1e-6 default is for full fine-tuning; LoRA wants 5e-5..1e-4
    beta: float = 0.1
    batch_size: int = 4  # pairs (DPO) or rows (SFT) per optimizer step
    # Rows per forward pass; the rest is gradient accumulation. DPO holds vocabulary-sized logits
    # for chosen and rejected of every row (fp32, 49k vocab: ~0.2 GB per 512-token pair), so a whole
    # batch of long pairs at once (PubMedQA: context + draft) reached 12.7 GB and was OOM-killed here.
    micro_batch_size: int | None = None  # None: the whole batch at once
    max_length: int = 512
    lora_r: int = 8
    lora_alpha: int = 16
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    seed: int = 0
    threads: int = 1  # vLLM holds the other core: two torch threads here thrash (measured: 2x slower per step)
    # SFT's stop rule: the loss on rows held out from train (new questions about the same facts) every
    # `eval_steps`; training stops after `patience` evaluations without a new best, and the best checkpoint is
    # kept. Lower train loss alone is memorisation (300 steps took it to 0.07 and moved weak-alone EM 2.5 points).
    eval_file: str | None = None
    eval_steps: int = 10
    patience: int = 2
    # Autocast matmuls to bf16 (the LoRA weights and optimizer stay fp32). Only where the CPU has native bf16
    # (shared.cpu.has_bf16); measured in bench/results/sft_precision.md.
    bf16: bool = False

    @classmethod
    def load(cls, path: str | Path) -> JobConfig:
        return cls(**json.loads(Path(path).read_text()))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))


def _common_args(cfg: JobConfig) -> dict:
    micro = min(cfg.micro_batch_size or cfg.batch_size, cfg.batch_size)
    # DPOConfig/SFTConfig defaults assume a GPU (bf16, gradient checkpointing): on the CPU, bf16 only when asked.
    return dict(
        output_dir=cfg.output_dir,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=max(1, cfg.batch_size // micro),
        bf16=cfg.bf16,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        max_length=cfg.max_length,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def _stop_rule_args(cfg: JobConfig) -> dict:
    """Evaluate and checkpoint every `eval_steps` (outside the adapter's directory), keep the best by held-out loss."""
    if not cfg.eval_file:
        return {}
    return dict(
        eval_strategy="steps",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.eval_steps,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        per_device_eval_batch_size=cfg.batch_size,
        output_dir=f"{cfg.output_dir}.checkpoints",
    )


def _stop_rule(cfg: JobConfig) -> dict:
    if not cfg.eval_file:
        return {}
    from datasets import load_dataset
    from transformers import EarlyStoppingCallback

    return dict(
        eval_dataset=load_dataset("json", data_files=cfg.eval_file, split="train"),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=cfg.patience)],
    )


def _best_step(checkpoint: str | None) -> int | None:
    return int(checkpoint.rsplit("-", 1)[1]) if checkpoint else None


def _model_and_peft(cfg: JobConfig):
    import torch
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(cfg.base_model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(cfg.base_model_dir, dtype=torch.float32)
    if cfg.init_adapter:
        return PeftModel.from_pretrained(model, cfg.init_adapter, is_trainable=True), None, tokenizer
    peft_config = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=0.0,
        target_modules=cfg.target_modules,
        task_type="CAUSAL_LM",
    )
    return model, peft_config, tokenizer


def run(kind: str, cfg: JobConfig) -> dict:
    from datasets import load_dataset

    dataset = load_dataset("json", data_files=cfg.data_file, split="train")
    model, peft_config, tokenizer = _model_and_peft(cfg)
    trainer: Any  # trl's DPOTrainer or SFTTrainer
    if kind == "dpo":
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(
            model=model,
            args=DPOConfig(**_common_args(cfg), beta=cfg.beta),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
    elif kind == "sft":
        from trl import SFTConfig, SFTTrainer

        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(**_common_args(cfg) | _stop_rule_args(cfg), completion_only_loss=True),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            **_stop_rule(cfg),
        )
    else:
        raise ValueError(f"unknown job kind {kind!r}")
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    # Only the trained adapter: with an init adapter, trl also holds a frozen "ref" copy.
    trainer.model.save_pretrained(cfg.output_dir, selected_adapters=["default"])
    shutil.rmtree(f"{cfg.output_dir}.checkpoints", ignore_errors=True)
    steps = [h for h in trainer.state.log_history if "loss" in h]
    evals = [{"step": h["step"], "loss": h["eval_loss"]} for h in trainer.state.log_history if "eval_loss" in h]
    metrics = {
        "kind": kind,
        "steps": trainer.state.global_step,
        "examples": len(dataset),
        "train_seconds": seconds,
        "seconds_per_step": seconds / max(1, trainer.state.global_step),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "loss": [h["loss"] for h in steps],
        "reward_margin": [h["rewards/margins"] for h in steps if "rewards/margins" in h],
        "eval_loss": evals,  # SFT with a stop rule: the held-out loss at each evaluation
        "best_step": _best_step(trainer.state.best_model_checkpoint),
        "stopped_early": bool(evals) and trainer.state.global_step < cfg.max_steps,
    }
    Path(cfg.output_dir, "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def die_with_parent() -> None:
    """Linux: the kernel SIGKILLs this job when the trainer that started it dies (a trainer killed mid-round
    must not leave a training job holding the CPU and memory of the next one)."""
    if sys.platform == "linux":
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def main() -> None:
    die_with_parent()
    kind, path = sys.argv[1], sys.argv[2]
    metrics = run(kind, JobConfig.load(path))
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, list)}))


if __name__ == "__main__":
    main()
