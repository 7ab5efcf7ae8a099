"""SFT is sized from the data and stopped by held-out loss: steps follow epochs over the rows, the job evaluates
on rows held out from train and stops after `patience` evaluations without a new best, keeping the best one.
A zero learning rate never improves the held-out loss, so the rule must stop it early (tiny model, real trl)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.trainer.jobs import JobConfig, run
from services.trainer.sft import SFT_TARGETS, hold_out, sft_steps

pytestmark = pytest.mark.slow


def _rows(path: Path, n: int, offset: int = 0) -> str:
    path.write_text(
        "".join(
            json.dumps(
                {
                    "prompt": [{"role": "user", "content": f"What does code {i} mean?"}],
                    "completion": [{"role": "assistant", "content": f"Code {i} is part {i}.\nAnswer: part {i}"}],
                }
            )
            + "\n"
            for i in range(offset, offset + n)
        )
    )
    return str(path)


def test_steps_follow_epochs_over_the_rows():
    assert sft_steps(rows=230, epochs=2, batch_size=4, max_steps=None) == 115
    assert sft_steps(rows=230, epochs=2, batch_size=4, max_steps=60) == 60
    assert sft_steps(rows=3, epochs=0.1, batch_size=4, max_steps=None) == 1


@pytest.mark.parametrize(
    "learning_rate, stops_early, bf16", [(0.0, True, False), (1e-2, False, False), (1e-2, False, True)]
)  # bf16 autocast learns too
def test_the_stop_rule_stops_when_held_out_loss_stops_improving(
    tiny_models, tmp_path, learning_rate, stops_early, bf16
):
    cfg = JobConfig(
        base_model_dir=str(tiny_models["tiny-weak"]),
        data_file=_rows(tmp_path / "train.jsonl", 16),
        output_dir=str(tmp_path / "adapter"),
        max_steps=12,
        learning_rate=learning_rate,
        batch_size=4,
        lora_r=4,
        lora_alpha=8,
        target_modules=SFT_TARGETS,
        eval_file=_rows(tmp_path / "held.jsonl", 4, 100),
        eval_steps=2,
        patience=2,
        bf16=bf16,
    )
    metrics = run("sft", cfg)
    losses = [e["loss"] for e in metrics["eval_loss"]]
    if stops_early:  # evaluations at steps 2, 4, 6: no new best after the first, so it stops at 6
        assert metrics["stopped_early"] and metrics["steps"] == 6 and len(losses) == 3
        assert metrics["best_step"] == 2
    else:  # a real learning rate on 16 rows keeps improving the held-out loss of similar rows
        assert not metrics["stopped_early"] and metrics["steps"] == 12 and losses[-1] < losses[0]
        assert metrics["best_step"] == min(metrics["eval_loss"], key=lambda e: e["loss"])["step"]
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    assert not (tmp_path / "adapter.checkpoints").exists()  # checkpoints never reach the registered adapter


def test_held_out_rows_are_questions_never_trained_on_and_at_most_half():
    rows = [{"id": f"card-{i}"} for i in range(4)] + [{"id": f"q-{i}"} for i in range(10)]
    train, held = hold_out(rows, 20, lambda r: r["id"].startswith("q-"))
    assert len(held) == 5 and all(r["id"].startswith("q-") for r in held)  # at most half of the questions
    assert (
        len(train) == 9 and not any(r in train for r in held) and sum(r["id"].startswith("card") for r in train) == 4
    )
    assert hold_out(rows, 0)[0] == rows and hold_out(rows, 3)[1] == hold_out(rows, 3)[1]  # seeded
