"""vLLM general plugin: two CPU-only fixes and one CPU speed-up (no-ops on GPUs).

- `lora_ops`: base-model tokens get no LoRA delta (upstream gives them the last adapter slot's), and
  LoRA matmuls run once per adapter slot (prefill ~40x cheaper than upstream's per-token gather).
- `seeded_sampling`: a request with `seed` whose prefill is chunked no longer kills the engine.

vLLM loads entry points of the group `vllm.general_plugins` in every process (API server,
engine core, workers), so `register` must be idempotent. Set COWEST_CPU_FIXES=0 to turn it
off (the test suite does, to prove both bugs are still there upstream).
"""

from __future__ import annotations

import logging
import os

# A child of the "vllm" logger, so the message lands in the server log with vLLM's own lines.
logger = logging.getLogger("vllm.plugins.cowest_cpu_fixes")
ENV_SWITCH = "COWEST_CPU_FIXES"


def register() -> None:
    """Entry point of the `vllm.general_plugins` group."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        logger.warning("cowest CPU fixes disabled (%s=0)", ENV_SWITCH)
        return
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return  # GPU kernels already skip index -1 and have offset generators
    from services.weak_server.cpu_plugin import lora_ops, seeded_sampling

    lora_ops.install()
    seeded_sampling.install()
    logger.info("cowest CPU fixes active: base-model rows get no adapter delta; seeded requests are safe")
