"""How the embedded strong server is launched (env prefix COWEST_STRONG_): on llama.cpp (`LlamaCppServerSettings`)
or on vLLM (`StrongServerSettings`, no LoRA), whichever engine the profile names (shared/catalog.py).

Why llama.cpp for the strong model: it serves the 4-bit GGUF file the model ships as, and on these CPUs
decoding is memory-bandwidth bound, and 4-bit weights decode the 1.5B model ~3x faster single-stream than
vLLM-CPU's fp32, 1.2x faster at 8-16 concurrent, in a fifth of the memory (bench/results/strong_engine.md).
The weak model stays on vLLM: it needs runtime LoRA hot-swap.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.vllm_launch import VllmServerSettings


class LlamaCppServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COWEST_STRONG_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8002
    # The cores the server runs on and its decoding threads. The weak vLLM server binds core 0, so the
    # embedded strong server takes core 1: llama.cpp's threads spin while they wait, and two threads on a
    # core vLLM uses would slow both (see ARCHITECTURE.md, CPU binding).
    cpu_bind: str = "1"
    threads: int = 1
    parallel: int = 8  # request slots decoded together (continuous batching)
    ctx_per_slot: int = 4096  # tokens of context per slot (prompt + answer)
    batch_tokens: int = 512  # prompt tokens per forward pass during prefill

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def argv(self, gguf: Path, served_name: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "services.strong_server.llamacpp",
            "--model",
            str(gguf),
            "--served-model-name",
            served_name,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--cpus",
            self.cpu_bind,
            "--threads",
            str(self.threads),
            "--parallel",
            str(self.parallel),
            "--ctx-per-slot",
            str(self.ctx_per_slot),
            "--batch-tokens",
            str(self.batch_tokens),
        ]


class StrongServerSettings(VllmServerSettings):
    model_config = SettingsConfigDict(env_prefix="COWEST_STRONG_", extra="ignore")
    port: int = 8002
    cpu_bind: str = "1"
