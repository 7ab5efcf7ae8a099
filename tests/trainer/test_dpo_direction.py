"""DPO must move the adapter the right way: after a job, the chosen drafts gain log-probability over the
rejected ones (measured with transformers + peft, outside trl). A job with chosen and rejected swapped
moves the margin the other way, and a zero learning rate does not move it: so this test fails if the
pairs are fed backwards or training does nothing."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from services.trainer.jobs import JobConfig, run

pytestmark = pytest.mark.slow

PROMPTS = ["What colour is the sky?", "Name a fruit.", "What is two plus two?", "Where do fish live?"]
CHOSEN = ["The sky is blue.", "An apple.", "Four.", "In water."]
REJECTED = ["zq zq zq zq", "qx vv qx vv", "kk jj kk jj", "ww pp ww pp"]


def _pairs(path: Path, swap: bool = False) -> Path:
    rows = []
    for q, c, r in zip(PROMPTS, CHOSEN, REJECTED, strict=True):
        good, bad = (r, c) if swap else (c, r)
        rows.append(
            {
                "prompt": [{"role": "user", "content": q}],
                "chosen": [{"role": "assistant", "content": good}],
                "rejected": [{"role": "assistant", "content": bad}],
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def margin(base_dir: Path, adapter: Path | None, rows: list[dict] | None = None) -> float:
    """Mean over pairs of log p(chosen | prompt) - log p(rejected | prompt), summed over completion tokens. `rows`:
    DPO data rows (prompt messages, chosen and rejected assistant messages); by default this module's pairs."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    model.eval()

    def logp(prompt: list[dict], answer: str) -> float:
        head = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": answer}], tokenize=False)
        n_head = len(tokenizer(head, add_special_tokens=False)["input_ids"])
        ids = torch.tensor([tokenizer(full, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logits = model(ids).logits[0, :-1].log_softmax(-1)
        targets = ids[0, 1:]
        return float(logits[n_head - 1 :].gather(1, targets[n_head - 1 :, None]).sum())

    if rows is None:
        rows = [json.loads(line) for line in _pairs(Path(tempfile.mkdtemp()) / "pairs.jsonl").read_text().splitlines()]
    diffs = [
        logp(r["prompt"], r["chosen"][0]["content"]) - logp(r["prompt"], r["rejected"][0]["content"]) for r in rows
    ]
    return sum(diffs) / len(diffs)


def _train(tiny_models, tmp_path: Path, name: str, swap: bool = False, lr: float = 5e-3) -> Path:
    out = tmp_path / name
    run(
        "dpo",
        JobConfig(
            base_model_dir=str(tiny_models["tiny-weak"]),
            data_file=str(_pairs(tmp_path / f"{name}.jsonl", swap)),
            output_dir=str(out),
            max_steps=6,
            learning_rate=lr,
            batch_size=4,
            beta=0.1,
        ),
    )
    return out


def test_dpo_raises_the_chosen_minus_rejected_margin(tiny_models, tmp_path):
    base = tiny_models["tiny-weak"]
    before = margin(base, None)
    assert margin(base, _train(tiny_models, tmp_path, "forward")) > before + 0.5
    assert margin(base, _train(tiny_models, tmp_path, "swapped", swap=True)) < before - 0.5
    assert abs(margin(base, _train(tiny_models, tmp_path, "frozen", lr=0.0)) - before) < 1e-3
