"""Base-model rows get no LoRA delta on the CPU, and LoRA matmuls run per adapter slot.

vLLM's torch (CPU) LoRA ops gather `lora_weights[indices]`, and a base-model token has index -1,
which Python indexing turns into the *last adapter slot*. A base request batched with adapter
requests then silently decodes with an adapter's delta (upstream: vllm-project/vllm #48421,
#49656). The GPU kernels skip -1 rows; these CPU ops do the same (`install` rebinds the names
`punica_cpu` imported at module load). They also multiply once per adapter slot instead of gathering a
weight copy per token, which makes LoRA prefill on the CPU ~40x cheaper (`bench/cpu_lora_ops.py`).
"""

from __future__ import annotations

import torch

PATCHED_NAMES = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")


def _lora_matmul(inputs, lora_weights, indices, dtype):
    """Row t of the result is inputs[t] @ lora_weights[indices[t]].T, and zero where indices[t] is -1.

    Computed per adapter slot, not per token: upstream gathers a copy of the LoRA matrix for every
    token (`lora_weights[indices]`), which on a 450-token prompt costs ~40x the matmul itself (prefill
    of 8 such prompts took ~45 s on SmolLM2-135M). A batch holds a handful of distinct adapters, so
    one matmul per distinct index is both exact and fast."""
    weights = lora_weights.squeeze(dim=1) if lora_weights.dim() == 4 else lora_weights  # [slots, out, in]
    x = inputs.to(dtype=dtype)
    first = int(indices[0]) if indices.numel() else -1
    if indices.numel() and first >= 0 and bool((indices == first).all()):  # one adapter: the common case
        return x @ weights[first].to(dtype=dtype).T
    out = x.new_zeros((x.shape[0], weights.shape[1]))
    for slot in torch.unique(indices).tolist():
        if slot < 0:
            continue  # base-model rows get no delta (the fix)
        rows = (indices == slot).nonzero(as_tuple=True)[0]
        out[rows] = x[rows] @ weights[slot].to(dtype=dtype).T
    return out


def bgmv_shrink(inputs, lora_a_weights, output_tensor, lora_indices_tensor, scaling: float = 1.0):
    outputs = _lora_matmul(inputs, lora_a_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs[:]


def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs: bool = True):
    outputs = _lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1
    # The adapter and the model may pad their outputs differently.
    common_len = min(outputs.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :common_len] += outputs[:limit, :common_len]
    else:
        output_tensor[:, :common_len] = outputs[:limit, :common_len]


def bgmv_expand_slice(
    inputs,
    lora_b_weights,
    output_tensor,
    lora_indices_tensor,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = True,
):
    outputs = _lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += outputs[:]
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = outputs[:]


def install() -> None:
    """Replace vLLM's CPU bgmv ops with the ones above."""
    from vllm.lora.ops import torch_ops
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    replacements = {name: globals()[name] for name in PATCHED_NAMES}
    # lora_ops: the sgmv_* functions look the bgmv_* names up in their own module at call time.
    for module in (lora_ops, torch_ops, punica_cpu):
        for name, fn in replacements.items():
            if hasattr(module, name):
                setattr(module, name, fn)
