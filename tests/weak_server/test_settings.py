"""The vLLM command line and environment built from settings (no server started)."""

from __future__ import annotations

import json
from pathlib import Path

from services.strong_server.settings import StrongServerSettings
from services.weak_server.settings import WeakServerSettings


def _model(tmp_path: Path, max_pos: int = 8192) -> Path:
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": max_pos}))
    return tmp_path


def test_weak_server_enables_runtime_lora(tmp_path, monkeypatch):
    monkeypatch.setenv("COWEST_WEAK_PORT", "9101")
    monkeypatch.setenv("COWEST_WEAK_MAX_LORAS", "4")
    weak = WeakServerSettings(vllm_bin=Path("/opt/vllm/bin/vllm"))
    argv = weak.argv(_model(tmp_path), "SmolLM2-135M-Instruct", "float32")
    assert argv[:3] == ["/opt/vllm/bin/vllm", "serve", str(tmp_path)]
    joined = " ".join(argv)
    assert "--port 9101" in joined and "--enable-lora --max-loras 4 --max-lora-rank 16" in joined
    assert "--served-model-name SmolLM2-135M-Instruct" in joined and "--enforce-eager" in argv
    env = weak.env()
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0" and env["COWEST_CPU_FIXES"] == "1"


def test_strong_server_has_no_lora_and_its_own_core(tmp_path):
    strong = StrongServerSettings(vllm_bin=Path("vllm"))
    argv = strong.argv(_model(tmp_path), "Qwen2.5-Coder-0.5B-Instruct", "float32")
    assert "--enable-lora" not in argv and "--enforce-eager" in argv
    assert strong.env()["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in strong.env()


def test_max_model_len_is_clamped_to_the_model(tmp_path):
    weak = WeakServerSettings(vllm_bin=Path("vllm"), max_model_len=4096)
    argv = weak.argv(_model(tmp_path, max_pos=2048), "m", "float32")
    assert argv[argv.index("--max-model-len") + 1] == "2048"


def test_dtype_setting_overrides_the_catalog(tmp_path):
    weak = WeakServerSettings(vllm_bin=Path("vllm"), dtype="bfloat16")
    argv = weak.argv(_model(tmp_path), "m", "float32")
    assert argv[argv.index("--dtype") + 1] == "bfloat16"
