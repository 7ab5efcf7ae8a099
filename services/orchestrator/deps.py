"""The app's long-lived clients (built once at start-up) and the FastAPI dependencies that hand them out."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from fastapi import Request
from redis.asyncio import Redis

from services.orchestrator.adapters import AdapterAliases
from services.orchestrator.config import OrchestratorSettings
from services.orchestrator.errors import APIError
from services.orchestrator.metrics import Metrics
from services.orchestrator.pipeline import Collaborator
from services.orchestrator.tracelog import TraceLog
from shared import domains, redis_keys
from shared.upstream import Upstream, UpstreamError


class ModelDirectory:
    """Which server serves a model name (weak base + adapters, strong), cached for a few seconds."""

    def __init__(self, weak: Upstream, strong: Upstream, ttl_s: float = 5.0):
        self.upstreams = {"weak": weak, "strong": strong}
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, list[dict]]] = {}

    async def cards(self, role: str, fresh: bool = False) -> list[dict]:
        at, cards = self._cache.get(role, (0.0, []))
        if fresh or time.monotonic() - at > self.ttl_s:
            try:
                cards = await self.upstreams[role].models()
                self._cache[role] = (time.monotonic(), cards)
            except UpstreamError:
                pass  # keep the last known list while the server is away
        return cards

    async def served_by(self, model: str) -> str | None:
        for role in ("weak", "strong"):
            if any(card.get("id") == model for card in await self.cards(role)):
                return role
        return None


@dataclass
class AppState:
    settings: OrchestratorSettings
    redis: Redis
    pubsub_redis: Redis
    weak: Upstream
    strong: Upstream
    aliases: AdapterAliases
    log: TraceLog
    metrics: Metrics
    collaborator: Collaborator
    directory: ModelDirectory

    @classmethod
    def create(cls, settings: OrchestratorSettings) -> AppState:
        metrics = Metrics()
        # Short timeouts on the logging client: a slow Redis must spool, not stall requests.
        redis = redis_keys.connect(
            settings.endpoints.redis_url,
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
        )
        pubsub_redis = redis_keys.connect(
            settings.endpoints.redis_url, socket_connect_timeout=2.0, health_check_interval=10
        )
        weak = Upstream(
            "weak",
            settings.endpoints.weak_url,
            timeout_s=settings.weak_timeout_s,
            connect_timeout_s=settings.connect_timeout_s,
        )
        strong = Upstream(
            "strong",
            settings.endpoints.strong_url,
            timeout_s=settings.strong_timeout_s,
            connect_timeout_s=settings.connect_timeout_s,
            retries=settings.strong_retries,
            retry_max_wait_s=settings.retry_max_wait_s,
            api_key=settings.endpoints.strong_key(),
        )
        aliases = AdapterAliases(pubsub_redis, settings.alias_refresh_s, on_change=metrics.set_active_adapter)
        log = TraceLog(redis, settings.spool_path, maxlen=settings.traces_maxlen, timeout_s=settings.redis_timeout_s)
        collaborator = Collaborator(settings, weak, strong, aliases, log, metrics)
        return cls(
            settings,
            redis,
            pubsub_redis,
            weak,
            strong,
            aliases,
            log,
            metrics,
            collaborator,
            ModelDirectory(weak, strong),
        )

    async def aclose(self) -> None:
        await self.weak.aclose()
        await self.strong.aclose()
        await self.redis.aclose()
        await self.pubsub_redis.aclose()

    def known_domains(self) -> list[str]:
        return sorted(set(self.settings.domains) | set(domains.registered()) | set(self.aliases.snapshot()))


def get_state(request: Request) -> AppState:
    return request.app.state.cowest


def require_api_key(request: Request) -> None:
    keys = get_state(request).settings.api_keys
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not any(hmac.compare_digest(token.encode(), k.encode()) for k in keys):
        raise APIError(
            401,
            "invalid or missing API key: send `Authorization: Bearer <key>`",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
