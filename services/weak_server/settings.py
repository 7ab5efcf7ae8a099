"""How the weak vLLM server is launched (env prefix COWEST_WEAK_): LoRA on, runtime adapter loading."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.vllm_launch import VllmServerSettings


class WeakServerSettings(VllmServerSettings):
    model_config = SettingsConfigDict(env_prefix="COWEST_WEAK_", extra="ignore")
    port: int = 8001
    cpu_bind: str = "0"
    enable_lora: bool = True
