"""Trainer settings (pydantic-settings, env prefix COWEST_TRAINER_)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.collaboration import Limits
from shared.config import CowestSettings, Endpoints


class TrainerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COWEST_TRAINER_", extra="ignore", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = 8003
    # Every route but /healthz requires this key (shared/auth.py); unset, they answer 403.
    admin_key: SecretStr | None = Field(
        default=None,
        repr=False,
        validation_alias=AliasChoices("COWEST_ADMIN_KEY", "COWEST_TRAINER_ADMIN_KEY", "admin_key"),
    )
    # The weak vLLM server (its admin API too), the strong model and Redis (shared/config.py), and the weak
    # base model's weights (what SFT and DPO train on).
    endpoints: Endpoints = Field(default_factory=Endpoints)
    base_model_dir: Path = Field(default_factory=lambda: CowestSettings().models_dir / Endpoints().weak_model)
    # The domains this trainer learns (COWEST_TRAINER_DOMAINS=general,acme); None: every domain it sees.
    domains: Annotated[list[str] | None, NoDecode] = None
    adapters_dir: Path = Field(default_factory=lambda: CowestSettings().home_dir / "adapters")
    # Each version is published here before it is loaded (what every weak replica reads: its
    # VLLM_LORA_RESOLVER_CACHE_DIR, on storage they share), and loaded from here. None: loaded from adapters_dir.
    served_adapters_dir: Path | None = Field(default_factory=lambda: CowestSettings().home_dir / "served-adapters")
    # The model argument the weak replicas were started with (`vllm serve <it>`), which vLLM's resolver compares
    # with a published adapter's base; None: base_model_dir (the same path where they share the models volume).
    weak_served_base: str | None = None
    # The weak vLLM replicas adapters are rolled out to (services/trainer/replicas.py), when they are not the ones
    # listed in COWEST_WEAK_URL: their roots (COWEST_TRAINER_WEAK_REPLICAS=http://weak-0:8001,http://weak-1:8001),
    # or "host:port" of a name that resolves to one address per replica (a Kubernetes headless Service behind
    # which the orchestrators reach them by one URL).
    weak_replicas: Annotated[list[str] | None, NoDecode] = None
    weak_replicas_dns: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+:\d{1,5}$")
    # Collaborative feedback
    k_drafts: int = 4
    draft_temperature: float = 0.8
    # The collaboration's limits are serving's (shared/collaboration.py Limits): pairs are drafts as serving
    # writes them, and the gate scores the answers users get.
    draft_max_tokens: int = Limits.weak_max_tokens
    strong_max_tokens: int = Limits.strong_max_tokens
    strong_retries: int = 2
    pair_margin: float = 0.0
    max_pairs_per_question: int = 1
    concurrency: int = 8  # questions in flight: vLLM batches them
    # An entry whose handling fails this many times (say, a prompt longer than the weak model's context) goes
    # to the dead-letter stream (shared/redis_keys.py) and is acknowledged: it must not be retried forever.
    # Each failure backs the entry off first: retry_base_s, twice that, ... (at most retry_max_s), so 8 deliveries
    # span ~4 minutes: a model server restarting costs retries, not entries (`cowest feedback replay-dead`
    # brings dead letters back).
    max_deliveries: int = 8
    # An entry another consumer (a trainer that died) left unacknowledged this long is taken over by this one.
    reclaim_idle_s: float = 60.0
    retry_base_s: float = 2.0
    retry_max_s: float = 300.0
    # Entries the trainer group has read and acknowledged are trimmed from the streams once this old (the
    # orchestrator's MAXLEN is only an emergency cap: it would trim entries nobody has read yet).
    stream_retention_s: float = 24 * 3600
    # How long the trainer keeps what it needs of each trace to join a later feedback with it (JOIN_FIELDS, ~0.6 KB
    # a trace): feedback after that cannot become pairs. 7 days = the orchestrator's memory of trace ids. At 100
    # requests/s that is ~37 GB of Redis (bench/results/redis_memory.md): lower it (1 day: ~5 GB) where feedback
    # comes soon after the answer.
    trace_keep_s: float = 7 * 24 * 3600
    # Rounds
    min_pairs_per_round: int = 8  # an automatic round starts at this many pairs
    # POST /train with force=true trains below min_pairs_per_round, but never below this: DPO on one or two
    # pairs collapsed the weak model on an unseen domain while a tiny gate let it through.
    min_pairs_forced: int = 4
    round_interval_s: float = 0.0  # 0: no schedule, rounds start on enough pairs or POST /train
    failed_round_backoff_s: float = 300.0  # after a failed automatic round; doubles per failure, at most 1 h
    lock_ttl_s: int = 300  # renewed every third of it while a round runs; lapses this soon after a crash
    # DPO job per round (services/trainer/jobs.py JobConfig)
    dpo_epochs: float = 2.0  # steps = epochs x pairs / batch size, at most dpo_max_steps
    dpo_max_steps: int = 200
    dpo_learning_rate: float = 5e-5
    dpo_batch_size: int = 4
    dpo_micro_batch_size: int = 2  # pairs per forward pass (gradient accumulation for the rest): bounds memory
    dpo_beta: float = 0.1
    # Gate, swap, rollback
    # Gate (services/trainer/gate.py): a paired comparison on the held-out items
    gate_tolerance: float = 0.05  # non-inferiority margin: paired 95% CI of candidate - active must stay above -this
    gate_min_items: int = 20  # no round trains before the gate has this many held-out items
    # The gate scores at most this many held-out items (a stable sample by question): every round runs both
    # versions over them, so an ever-growing held-out set would make every round slower.
    gate_max_items: int = 200
    gate_min_variety: float = 0.5  # distinct draft answers vs the active version's: below this, a collapse
    rollback_depth: int = 1  # older versions kept loaded for instant rollback
    max_lora_rank: int = 16
    # Automatic rollback: when the active version's mean live feedback score (from /v1/feedback `score`)
    # falls below its predecessor's by more than this, over at least `auto_rollback_min_feedback` scores.
    auto_rollback_threshold: float = 0.1
    auto_rollback_min_feedback: int = 20
    # Canary (services/trainer/canary.py): a version that passed the gate first serves this share of the domain's
    # requests beside the active one; 0 flips all traffic to it at once.
    canary_weight: float = Field(default=0.0, ge=0.0, lt=1.0)
    canary_min_feedback: int = 20  # live scores per version, given during the canary, before it is judged
    canary_margin: float = 0.05  # promoted when its mean live score >= the active version's - margin; else rolled back
    canary_max_s: float = 24 * 3600.0  # not enough feedback by then: promoted on the gate's evidence alone
    drain_s: float = 5.0  # how long the previous version stays loaded after the flip at least
    request_timeout_s: float = 300.0

    @field_validator("domains", "weak_replicas", mode="before")
    @classmethod
    def _split_csv(cls, value):
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
