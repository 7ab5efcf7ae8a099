"""vLLM general plugin: base-model tokens must get no LoRA delta on the CPU.

vLLM's torch (CPU) LoRA ops gather `lora_weights[indices]`, and a base-model token has index -1,
which Python indexing turns into the *last adapter slot*. A base request batched with adapter
requests then silently decodes with an adapter's delta (upstream: vllm-project/vllm #48421,
#49656). The GPU kernels skip -1 rows; this plugin makes the CPU ops do the same by zeroing the
gathered weights of -1 rows, and rebinds the names `punica_cpu` imported at module load.

vLLM loads entry points of the group `vllm.general_plugins` in every process (API server,
engine core, workers), so `register` must be idempotent. Set COWEST_CPU_LORA_FIX=0 to turn it
off (the test suite does, to prove the bug is still there upstream).
"""

from __future__ import annotations

import logging
import os

import torch

# A child of the "vllm" logger, so the message lands in the server log with vLLM's own lines.
logger = logging.getLogger("vllm.plugins.cowest_cpu_lora_fix")
_PATCHED_NAMES = ("bgmv_shrink", "bgmv_expand", "bgmv_expand_slice")


def _select_masked(lora_weights, indices, dtype):
    """lora_weights[indices] with the rows of base-model tokens (index -1) zeroed."""
    selected = lora_weights[indices.clamp(min=0)].to(dtype=dtype)
    if selected.dim() == 4:
        selected = selected.squeeze(dim=1)
    keep = (indices >= 0).to(dtype=dtype).view(-1, 1, 1)
    return selected * keep


def bgmv_shrink(inputs, lora_a_weights, output_tensor, lora_indices_tensor, scaling: float = 1.0):
    selected = _select_masked(lora_a_weights, lora_indices_tensor, output_tensor.dtype)
    outputs = torch.einsum("bi, boi -> bo", inputs.to(dtype=output_tensor.dtype), selected)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs[:]


def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs: bool = True):
    selected = _select_masked(lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    outputs = torch.einsum("bi, boi -> bo", inputs.to(dtype=output_tensor.dtype), selected)
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
    inputs, lora_b_weights, output_tensor, lora_indices_tensor, slice_offset: int, slice_size: int,
    add_inputs: bool = True,
):
    selected = _select_masked(lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    outputs = torch.einsum("bi, boi -> bo", inputs.to(dtype=output_tensor.dtype), selected)
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += outputs[:]
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = outputs[:]


def register() -> None:
    """Entry point of the `vllm.general_plugins` group."""
    if os.environ.get("COWEST_CPU_LORA_FIX", "1") == "0":
        logger.warning("cowest CPU LoRA fix disabled (COWEST_CPU_LORA_FIX=0)")
        return
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return  # GPU kernels already skip index -1
    from vllm.lora.ops import torch_ops
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    replacements = {name: globals()[name] for name in _PATCHED_NAMES}
    # lora_ops: the sgmv_* functions look the bgmv_* names up in their own module at call time.
    for module in (lora_ops, torch_ops, punica_cpu):
        for name, fn in replacements.items():
            if hasattr(module, name):
                setattr(module, name, fn)
    logger.info("cowest CPU LoRA fix active: base-model rows get no adapter delta")
