"""Orchestrator settings (pydantic-settings, env prefix COWEST_ORCH_)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.collaboration import Limits
from shared.config import CowestSettings, Endpoints
from shared.domains import BUILTIN as BUILTIN_DOMAINS


class OrchestratorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COWEST_ORCH_", extra="ignore", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = 8000
    # Worker processes (uvicorn), each with its own clients and spool slot. /metrics then reports the worker that
    # answered the scrape: for per-replica metrics, prefer one worker per container and more replicas.
    workers: int = Field(default=1, ge=1, le=32)
    access_log: bool = True  # uvicorn's line per request
    # The weak and strong model servers and Redis (env COWEST_WEAK_URL, COWEST_STRONG_URL, ...; shared/config.py).
    endpoints: Endpoints = Field(default_factory=Endpoints)
    # Timeouts (seconds): per read, and per stage with its retries (`*_deadline_s`); the strong endpoint's retries.
    connect_timeout_s: float = 3.0
    weak_timeout_s: float = 120.0  # per read
    strong_timeout_s: float = 300.0
    # Per stage, retries included: a slow weak model degrades to the strong one alone instead of eating the whole
    # request deadline; a slow strong model falls back to the draft.
    weak_deadline_s: float = 120.0
    strong_deadline_s: float = 400.0
    strong_retries: int = 2
    retry_max_wait_s: float = 20.0
    # What to answer when the strong model fails after retries: the weak draft (flagged degraded) or 503.
    strong_fallback: Literal["draft", "error"] = Limits.strong_fallback
    # Which path a request runs when it names no mode: "adapter" drafts only for a domain that has an
    # active adapter (a domain's weak model knows nothing before it is trained, and its draft derails the
    # strong model: "Name two primary colours." -> "The answer is: 3"); elsewhere the strong model answers
    # alone. "always" drafts with the base weak model too.
    draft_policy: Literal["adapter", "always"] = "adapter"
    weak_max_tokens: int = Limits.weak_max_tokens  # the collaboration's defaults (shared/collaboration.py)
    strong_max_tokens: int = Limits.strong_max_tokens
    # Backpressure: requests answered at once per process (more: 503 + Retry-After, at once, instead of queueing
    # behind the model servers), the most one request may take in all (504 after it; per-read timeouts alone let
    # one request hold a slot for ~17 min across retries), how long a stream waits on a slow reader, and how
    # long shutdown waits for requests in flight.
    max_in_flight: int = 64
    request_deadline_s: float = 600.0
    stream_send_timeout_s: float = 30.0
    shutdown_grace_s: float = 30.0
    max_tokens_limit: int = 4096
    max_body_bytes: int = 1_000_000
    # Built-in domains served before any adapter exists (a domain with an active adapter or a registered
    # spec is always served).
    domains: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(BUILTIN_DOMAINS))
    # Bearer keys; empty = no auth. Read from COWEST_API_KEYS (comma-separated).
    # The admin key (shared/auth.py) guards PUT /v1/domains; unset: those routes answer 403.
    admin_key: SecretStr | None = Field(
        default=None,
        repr=False,
        validation_alias=AliasChoices("COWEST_ADMIN_KEY", "COWEST_ORCH_ADMIN_KEY", "admin_key"),
    )
    docs: bool = False  # /docs and /openapi.json (off: they map every route for whoever asks)
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, repr=False, validation_alias=AliasChoices("COWEST_API_KEYS", "COWEST_ORCH_API_KEYS")
    )
    redis_timeout_s: float = 0.5  # a slow Redis must not slow a request: spool instead
    # An emergency cap of each stream (XADD MAXLEN ~): the trainer trims what it has acknowledged, so this
    # only bites when the trainer is down for long, and then it drops the oldest unread entries.
    traces_maxlen: int = 10_000_000
    # The spool while Redis is away: one file per process (locked; replicas need their own path), at most this
    # big (then records are dropped and counted in cowest_log_dropped: alert on it).
    max_spool_bytes: int = 256 * 2**20
    spool_path: Path = Field(default_factory=lambda: CowestSettings().home_dir / "spool" / "orchestrator.jsonl")
    # Full re-read of the alias keys (one SMEMBERS + one MGET), the bound on how long a missed notification lasts.
    alias_refresh_s: float = 5.0

    def limits(self) -> Limits:
        return Limits(
            weak_max_tokens=self.weak_max_tokens,
            strong_max_tokens=self.strong_max_tokens,
            strong_fallback=self.strong_fallback,
        )

    @field_validator("domains", "api_keys", mode="before")
    @classmethod
    def _split_csv(cls, value):
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
