"""Orchestrator and trainer settings pointed at test servers (real or fake)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr

from services.orchestrator.config import OrchestratorSettings
from services.trainer.config import TrainerSettings
from shared.config import Endpoints

ADMIN_KEY = "test-admin-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}  # headers for the trainer's API and the orchestrator's admin routes


def endpoints(
    weak: str, strong: str, redis_url: str, weak_model: str = "tiny-weak", strong_model: str = "tiny-strong"
) -> Endpoints:
    """`weak` and `strong` are server roots or OpenAI base URLs (Endpoints adds the /v1)."""
    return Endpoints(
        weak_url=weak, weak_model=weak_model, strong_url=strong, strong_model=strong_model, redis_url=redis_url
    )


def orch_settings(
    weak_url: str,
    strong_url: str,
    redis_url: str,
    spool: Path,
    *,
    weak_model: str = "tiny-weak",
    strong_model: str = "tiny-strong",
    **overrides: Any,
) -> OrchestratorSettings:
    defaults: dict[str, Any] = dict(
        spool_path=spool,
        weak_max_tokens=8,
        strong_max_tokens=8,
        retry_max_wait_s=3.0,
        admin_key=SecretStr(ADMIN_KEY),
        draft_policy="always",
    )  # these tests exercise the draft on domains without an adapter
    return OrchestratorSettings(
        endpoints=endpoints(weak_url, strong_url, redis_url, weak_model, strong_model), **{**defaults, **overrides}
    )


def trainer_settings(
    weak_url: str,
    strong_url: str,
    redis_url: str,
    *,
    base_model_dir: Path | None = None,
    weak_model: str = "tiny-weak",
    strong_model: str = "tiny-strong",
    **overrides: Any,
) -> TrainerSettings:
    fields: dict[str, Any] = dict(
        endpoints=endpoints(weak_url, strong_url, redis_url, weak_model, strong_model), admin_key=SecretStr(ADMIN_KEY)
    )
    if base_model_dir is not None:
        fields["base_model_dir"] = base_model_dir
    if "adapters_dir" in overrides:  # published beside the test's registry, never in the user's COWEST_HOME
        fields["served_adapters_dir"] = Path(overrides["adapters_dir"]).parent / "served-adapters"
    return TrainerSettings(**{**fields, **overrides})


def unit_trainer_settings(tmp_path: Path, **overrides: Any) -> TrainerSettings:
    """Trainer settings for the in-memory unit tests: no server behind the URLs, an empty base model directory
    (`tmp_path/base-model`), the registry under `tmp_path/adapters`, no drain."""
    base = tmp_path / "base-model"
    base.mkdir(parents=True, exist_ok=True)
    fields: dict[str, Any] = dict(base_model_dir=base, adapters_dir=tmp_path / "adapters", drain_s=0.0)
    return trainer_settings("http://weak", "http://strong", "redis://unused", **{**fields, **overrides})
