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
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


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
    threads: int = 1  # vLLM holds the other core: two torch threads here thrash (runtime-facts.md)

    @classmethod
    def load(cls, path: str | Path) -> JobConfig:
        return cls(**json.loads(Path(path).read_text()))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))


def _common_args(cfg: JobConfig) -> dict:
    micro = min(cfg.micro_batch_size or cfg.batch_size, cfg.batch_size)
    # DPOConfig/SFTConfig defaults assume a GPU: bf16 and gradient checkpointing off on the CPU.
    return dict(output_dir=cfg.output_dir, max_steps=cfg.max_steps, learning_rate=cfg.learning_rate,
                per_device_train_batch_size=micro, gradient_accumulation_steps=max(1, cfg.batch_size // micro), bf16=False,
                fp16=False, gradient_checkpointing=False, use_cpu=True, seed=cfg.seed, data_seed=cfg.seed,
                logging_steps=1, save_strategy="no", report_to=[], max_length=cfg.max_length,
                dataloader_num_workers=0, disable_tqdm=True)


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
    peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                             target_modules=cfg.target_modules, task_type="CAUSAL_LM")
    return model, peft_config, tokenizer


def run(kind: str, cfg: JobConfig) -> dict:
    from datasets import load_dataset

    dataset = load_dataset("json", data_files=cfg.data_file, split="train")
    model, peft_config, tokenizer = _model_and_peft(cfg)
    if kind == "dpo":
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(**_common_args(cfg), beta=cfg.beta)
        trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=peft_config)
    elif kind == "sft":
        from trl import SFTConfig, SFTTrainer

        args = SFTConfig(**_common_args(cfg), completion_only_loss=True)
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=peft_config)
    else:
        raise ValueError(f"unknown job kind {kind!r}")
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    # Only the trained adapter: with an init adapter, trl also holds a frozen "ref" copy.
    trainer.model.save_pretrained(cfg.output_dir, selected_adapters=["default"])
    steps = [h for h in trainer.state.log_history if "loss" in h]
    metrics = {
        "kind": kind, "steps": trainer.state.global_step, "examples": len(dataset), "train_seconds": seconds,
        "seconds_per_step": seconds / max(1, trainer.state.global_step),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "loss": [h["loss"] for h in steps],
        "reward_margin": [h["rewards/margins"] for h in steps if "rewards/margins" in h],
    }
    Path(cfg.output_dir, "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def main() -> None:
    kind, path = sys.argv[1], sys.argv[2]
    metrics = run(kind, JobConfig.load(path))
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, list)}))


if __name__ == "__main__":
    main()
