"""How the weak vLLM server is launched (env prefix COWEST_WEAK_): LoRA on, runtime adapter loading."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.config import CowestSettings
from shared.vllm_launch import VllmServerSettings


class WeakServerSettings(VllmServerSettings):
    model_config = SettingsConfigDict(env_prefix="COWEST_WEAK_", extra="ignore")
    port: int = 8001
    cpu_bind: str = "0"
    enable_lora: bool = True
    # Where the trainer publishes adapter versions (its COWEST_TRAINER_SERVED_ADAPTERS_DIR): the same directory.
    lora_resolver_dir: Path | None = Field(default_factory=lambda: CowestSettings().home_dir / "served-adapters")
