"""What this CPU can do, read at start-up: machines of one kind differ (some have AVX-512 with bf16 and
VNNI, some only AVX2), so dtype and kernel choices are made from the flags, never assumed."""

from __future__ import annotations

import functools
import os
from pathlib import Path


@functools.cache
def cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_bf16() -> bool:
    """Native bf16 dot products (AVX512-BF16 or AMX): only then does bf16 beat fp32 on a CPU."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def has_amx() -> bool:
    return bool(cpu_flags() & {"amx_bf16", "amx_tile"})


def vllm_cpu_dtype() -> str:
    """vLLM-CPU's dtype for this machine: bf16 halves memory traffic but is emulated (slower) without
    native bf16 units, so fp32 there (measured on AVX2: bench/results/strong_engine.md). Not on AMX machines
    either: there vllm-cpu 0.32's bf16 path decoded SmolLM2 into nonsense ("What is the capital of France?" ->
    "L'Etoile, la Marseillaise, la femme, ...") where fp32 answered "Paris", with or without LoRA, while torch's
    own bf16 matmuls were exact (bench/results/cpu_amx_bf16.md)."""
    return "bfloat16" if has_bf16() and not has_amx() else "float32"


def cpu_summary() -> str:
    flags = cpu_flags()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    extras = [f for f in ("avx512_bf16", "avx512_vnni", "amx_bf16") if f in flags]
    return f"{os.cpu_count()} cores, {isa}" + (f" ({', '.join(extras)})" if extras else "")
