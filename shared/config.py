"""Settings shared by every service and the CLI (pydantic-settings, env prefix COWEST_).

- `CowestSettings`: this machine's cache, profile and Redis (the CLI and the local stack).
- `Endpoints`: where the weak and strong models and Redis are, said once for the orchestrator and the trainer.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.catalog import get_profile

# The repository root, when running from a checkout (editable install): where the Makefile
# puts the vLLM environment (.venv-vllm).
REPO_ROOT = Path(__file__).resolve().parent.parent


class CowestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COWEST_", extra="ignore")

    home: Path = Field(default=Path("~/.cache/cowest"), description="Model cache, pid files and logs")
    profile: str = "default"
    # REDIS_URL is honoured too: it is the name every other tool uses.
    # Not in repr: with an ACL user the URL holds its password (rediss://user:password@host).
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("COWEST_REDIS_URL", "REDIS_URL"),
        repr=False,
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


def _profile_model(role: str) -> str:
    """The served name of the weak or strong model of the configured profile: the catalog names models."""
    profile = get_profile(CowestSettings().profile)
    return profile.weak if role == "weak" else profile.strong


class Endpoints(BaseSettings):
    """Where the models and Redis are (env COWEST_WEAK_URL, COWEST_STRONG_URL, COWEST_STRONG_API_KEY, ...).

    One URL convention: a model server is named by its OpenAI base URL, ending in `/v1` (what every OpenAI
    client takes; added when missing). The weak vLLM server's admin API (LoRA load/unload, /health) lives at
    the same server's root (`weak_roots`). Model names default to the profile's (shared/catalog.py).
    Several replicas of a model server (not behind one Service): their base URLs comma-separated; the
    orchestrator balances over them and the trainer rolls adapters out to every weak one (`weak_roots`).
    """

    model_config = SettingsConfigDict(env_prefix="COWEST_", extra="ignore", populate_by_name=True)

    weak_url: str = "http://127.0.0.1:8001/v1"
    weak_model: str = Field(default_factory=lambda: _profile_model("weak"))  # the base model's served name
    strong_url: str = "http://127.0.0.1:8002/v1"
    strong_model: str = Field(default_factory=lambda: _profile_model("strong"))
    strong_api_key: SecretStr | None = Field(default=None, repr=False)
    weak_api_key: SecretStr | None = Field(default=None, repr=False)  # the weak vLLM server's --api-key
    redis_url: str = Field(  # not in repr: it may hold an ACL user's password
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("COWEST_REDIS_URL", "REDIS_URL", "redis_url"),
        repr=False,
    )

    @field_validator("weak_url", "strong_url")
    @classmethod
    def _openai_base(cls, urls: str) -> str:
        bases = [u.strip().rstrip("/") for u in urls.split(",") if u.strip()]
        return ",".join(u if u.endswith("/v1") else f"{u}/v1" for u in bases)

    @property
    def weak_roots(self) -> list[str]:
        return [u.removesuffix("/v1") for u in self.weak_url.split(",")]

    def strong_key(self) -> str | None:
        return self.strong_api_key.get_secret_value() if self.strong_api_key else None

    def weak_key(self) -> str | None:
        return self.weak_api_key.get_secret_value() if self.weak_api_key else None
