"""vLLM's CPU LoRA ops (per-token weight gather) vs the plugin's per-slot matmuls, at the weak model's shapes.

The CPU punica wrapper turns prefill into `sgmv_*` = `bgmv_*` over per-token adapter indices, and
upstream's `bgmv_*` gathers `lora_weights[indices]`: one copy of the LoRA matrix per token. The
plugin (`services/weak_server/cpu_plugin/lora_ops.py`) multiplies once per distinct adapter slot. Both run
here in one process, back to back, on the same tensors; outputs are checked equal first.

    PYTHONPATH=. .venv-vllm/bin/python bench/cpu_lora_ops.py [--out bench/results/cpu_lora_ops.md]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
from vllm.lora.ops.torch_ops import lora_ops as upstream

from services.weak_server.cpu_plugin import lora_ops as plugin

HIDDEN, INTERMEDIATE, RANK, SLOTS = 576, 1536, 16, 4  # SmolLM2-135M, the SFT adapter's r, --max-loras
LAYERS = 30
# Per decoder layer, the LoRA'd projections vLLM runs as (in, out) shrink + expand pairs:
# q, k, v (k/v are 192 wide: 3 KV heads x 64), o, gate, up, down.
PROJECTIONS = [
    (HIDDEN, HIDDEN),
    (HIDDEN, 192),
    (HIDDEN, 192),
    (HIDDEN, HIDDEN),
    (HIDDEN, INTERMEDIATE),
    (HIDDEN, INTERMEDIATE),
    (INTERMEDIATE, HIDDEN),
]


def one_layer(ops, x_by_in, weights, indices) -> None:
    for (inp, out), (a, b) in zip(PROJECTIONS, weights, strict=True):
        mid = torch.zeros(indices.numel(), RANK)
        y = torch.zeros(indices.numel(), out)
        ops.bgmv_shrink(x_by_in[inp], a, mid, indices, 1.0)
        ops.bgmv_expand(mid, b, y, indices, True)


def timed(ops, x_by_in, weights, indices, repeats: int) -> float:
    one_layer(ops, x_by_in, weights, indices)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        one_layer(ops, x_by_in, weights, indices)
    return (time.perf_counter() - t0) / repeats * LAYERS  # seconds per forward pass (all layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/cpu_lora_ops.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the weak server: one core
    torch.manual_seed(0)
    weights = [(torch.randn(SLOTS, 1, RANK, inp), torch.randn(SLOTS, 1, out, RANK)) for inp, out in PROJECTIONS]
    cases = [  # (name, per-token adapter indices)
        ("decode, 8 sequences, one adapter", torch.zeros(8, dtype=torch.long)),
        ("decode, 8 sequences, 2 adapters + base", torch.tensor([0, 1, -1, 0, 1, -1, 0, 0])),
        ("prefill, 1 prompt of 450 tokens", torch.zeros(450, dtype=torch.long)),
        ("prefill, 8 prompts of 450 tokens, one adapter", torch.zeros(3600, dtype=torch.long)),
        (
            "prefill, 8 prompts of 450 tokens, 2 adapters + base",
            torch.tensor([0, 1, -1, 0, 1, 0, 1, 0]).repeat_interleave(450),
        ),
    ]
    rows = []
    for name, indices in cases:
        x_by_in = {d: torch.randn(indices.numel(), d) for d in (HIDDEN, INTERMEDIATE)}
        if (indices >= 0).all():  # upstream is only right without base rows (the bug the plugin fixes)
            a, b = weights[0]
            got, want = torch.zeros(indices.numel(), RANK), torch.zeros(indices.numel(), RANK)
            plugin.bgmv_shrink(x_by_in[HIDDEN], a, got, indices, 1.0)
            upstream.bgmv_shrink(x_by_in[HIDDEN], a, want, indices, 1.0)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        repeats = 20 if indices.numel() < 100 else 2
        base = timed(upstream, x_by_in, weights, indices, repeats)
        ours = timed(plugin, x_by_in, weights, indices, repeats)
        rows.append(f"| {name} | {indices.numel()} | {base * 1000:.1f} | {ours * 1000:.1f} | {base / ours:.1f}x |")
        print(rows[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        f"# CPU LoRA ops: upstream per-token gather vs per-slot matmul ({time.strftime('%Y-%m-%d')})\n\n"
        f"Command: `PYTHONPATH=. .venv-vllm/bin/python bench/cpu_lora_ops.py`  \n"
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch thread, no GPU; SmolLM2-135M shapes "
        f"(hidden {HIDDEN}, MLP {INTERMEDIATE}, {LAYERS} layers), LoRA r={RANK} on q/k/v/o/gate/up/down, "
        f"{SLOTS} adapter slots. Time of the LoRA shrink+expand ops of one forward pass (all layers); the "
        f"base model's own matmuls are not included.\n\n"
        "| batch | tokens | upstream (ms) | plugin (ms) | speed-up |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
