"""The app's long-lived clients (built once at start-up) and the FastAPI dependencies that hand them out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fastapi import Request
from redis.asyncio import Redis

from services.orchestrator.adapters import AdapterAliases
from services.orchestrator.config import OrchestratorSettings
from services.orchestrator.directory import ModelDirectory
from services.orchestrator.errors import APIError
from services.orchestrator.metrics import Metrics
from services.orchestrator.pipeline import Collaborator, RequestContext
from services.orchestrator.serving import Serving
from services.orchestrator.tracelog import TraceLog
from shared import auth, redis_keys
from shared.upstream import Upstream

SPOOL_SLOTS = 64  # spool files a process may claim beside COWEST_ORCH_SPOOL_PATH: workers, and their restarts


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
    serving: Serving

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
            deadline_s=settings.weak_deadline_s,
            connect_timeout_s=settings.connect_timeout_s,
            api_key=settings.endpoints.weak_key(),
        )
        strong = Upstream(
            "strong",
            settings.endpoints.strong_url,
            timeout_s=settings.strong_timeout_s,
            deadline_s=settings.strong_deadline_s,
            connect_timeout_s=settings.connect_timeout_s,
            retries=settings.strong_retries,
            retry_max_wait_s=settings.retry_max_wait_s,
            api_key=settings.endpoints.strong_key(),
        )
        aliases = AdapterAliases(
            pubsub_redis,
            settings.alias_refresh_s,
            on_change=metrics.set_active_adapter,
            saved_at=settings.spool_path.with_name("adapter-aliases.json"),
        )
        metrics.alias_missed.set_function(lambda: aliases.missed)
        log = TraceLog(
            redis,
            settings.spool_path,
            maxlen=settings.traces_maxlen,
            timeout_s=settings.redis_timeout_s,
            max_spool_bytes=settings.max_spool_bytes,
            slots=SPOOL_SLOTS,  # one per worker process (COWEST_ORCH_WORKERS), and spares for restarted ones
        )
        collaborator = Collaborator(settings, weak, strong, aliases, log, metrics)
        directory = ModelDirectory(weak, strong)
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
            directory,
            Serving(settings, collaborator, directory),
        )

    async def aclose(self) -> None:
        self.log.close()
        await self.weak.aclose()
        await self.strong.aclose()
        await self.redis.aclose()
        await self.pubsub_redis.aclose()

    def known_domains(self) -> list[str]:
        return self.collaborator.domains()


# The dependencies are `async def` although none awaits: FastAPI runs a plain `def` dependency in its thread
# pool: a thread hand-off per dependency and request (a profile of the overhead bench found them).
async def get_state(request: Request) -> AppState:
    return request.app.state.cowest


async def get_serving(request: Request) -> Serving:
    return request.app.state.cowest.serving


def request_context(request: Request) -> RequestContext:
    """The ids the middleware gave this request, and which API it called."""
    api: Literal["collaborate", "chat"] = "chat" if request.url.path == "/v1/chat/completions" else "collaborate"
    state = request.state
    return RequestContext(trace_id=state.trace_id, request_id=state.request_id, traceparent=state.traceparent, api=api)


async def require_admin_key(request: Request) -> None:
    """The orchestrator's admin routes: the admin key only (a client key is not enough)."""
    key = request.app.state.cowest.settings.admin_key
    if key is None:
        raise APIError(
            403, "admin routes are disabled: no admin key is configured (COWEST_ADMIN_KEY)", code="admin_disabled"
        )
    if not auth.matches(auth.bearer_token(request.headers.get("authorization")), [key.get_secret_value()]):
        raise APIError(
            401,
            "invalid or missing admin key: send `Authorization: Bearer <admin key>`",
            code="invalid_admin_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def caller(request: Request) -> str | None:
    """Who is calling, when client keys are configured: the id of the key they sent (`shared.auth.key_id`).
    None when the orchestrator runs without client keys (then nobody can be told apart)."""
    keys = request.app.state.cowest.settings.api_keys
    token = auth.bearer_token(request.headers.get("authorization"))
    return auth.key_id(token) if keys and token is not None and auth.matches(token, keys) else None


async def require_api_key(request: Request) -> None:
    keys = request.app.state.cowest.settings.api_keys
    if not keys:
        return
    if not auth.matches(auth.bearer_token(request.headers.get("authorization")), keys):
        raise APIError(
            401,
            "invalid or missing API key: send `Authorization: Bearer <key>`",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
