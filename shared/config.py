"""Settings shared by every service and the CLI (pydantic-settings, env prefix COWEST_)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# The repository root, when running from a checkout (editable install): where the Makefile
# puts the vLLM environment (.venv-vllm).
REPO_ROOT = Path(__file__).resolve().parent.parent


class CowestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COWEST_", extra="ignore")

    home: Path = Field(default=Path("~/.cache/cowest"), description="Model cache, pid files and logs")
    profile: str = "default"
    # REDIS_URL is honoured too: it is the name every other tool uses.
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("COWEST_REDIS_URL", "REDIS_URL"),
    )
    # Where to look for model directories before any download: <local_models_dir>/<model key>/.
    local_models_dir: Path | None = None

    @cached_property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def models_dir(self) -> Path:
        return self.home_dir / "models"

    @property
    def downloads_dir(self) -> Path:
        return self.home_dir / "downloads"

    @property
    def run_dir(self) -> Path:
        return self.home_dir / "run"
