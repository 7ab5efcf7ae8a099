"""The CPU's features decide vLLM's dtype; a profile says how its strong model is pulled and served."""

from __future__ import annotations

from cowest.provision.pull import profile_pulls, pull_gguf, pull_model
from shared import cpu
from shared.catalog import get_profile


def test_bf16_only_with_native_bf16_units(monkeypatch):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert cpu.vllm_cpu_dtype() == "bfloat16" and "AVX-512 (avx512_bf16)" in cpu.cpu_summary()
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert cpu.vllm_cpu_dtype() == "float32" and "AVX2" in cpu.cpu_summary()


def test_no_vllm_bf16_on_amx_machines_where_it_decoded_nonsense(monkeypatch):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}))
    assert cpu.has_bf16() and cpu.vllm_cpu_dtype() == "float32"  # torch's bf16 (SFT) stays on
    assert get_profile("default").engine == "llamacpp"


def test_this_machine_has_readable_flags():
    cpu.cpu_flags.cache_clear()
    assert "sse2" in cpu.cpu_flags()  # every x86-64 CPU: the flags were read, not assumed


def test_the_default_strong_engine_follows_the_cpu_and_pulls_what_it_loads(monkeypatch):
    default = get_profile("default")
    assert default.strong_engine == "auto" and get_profile("quality") == default
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert default.engine == "vllm"  # native bf16: vLLM-CPU batches best, on the dequantized weights
    assert [(spec.key, puller) for spec, puller in profile_pulls("default")] == [
        (default.weak, pull_model),
        (default.strong, pull_model),
    ]
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert default.engine == "llamacpp"  # AVX2 only: llama.cpp on the GGUF file as shipped, no converted copy
    assert [(spec.key, puller) for spec, puller in profile_pulls("default")] == [
        (default.weak, pull_model),
        (default.strong, pull_gguf),
    ]
    assert [puller for _, puller in profile_pulls("fast")] == [pull_model, pull_model]
    assert [puller for _, puller in profile_pulls("tiny")] == [pull_model, pull_model]
