"""Orchestrator wiring: `python -m services.orchestrator.app` (or `cowest up`) serves it with uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI
from sse_starlette.sse import AppStatus
from uvicorn.supervisors import Multiprocess

from services.orchestrator.config import OrchestratorSettings
from services.orchestrator.deps import AppState
from services.orchestrator.errors import install_error_handlers
from services.orchestrator.middleware import RequestContextMiddleware
from services.orchestrator.protocol import ErrorResponse
from services.orchestrator.routes import chat, collaborate, domains, feedback, health, models
from shared import domains as domain_specs
from shared import redis_keys
from shared.openapi_errors import document_errors
from shared.supervise import supervised
from shared.watch import watch


def create_app(settings: OrchestratorSettings | None = None) -> FastAPI:
    settings = settings or OrchestratorSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state = AppState.create(settings)
        app.state.cowest = state
        if not settings.api_keys:
            logging.getLogger(__name__).warning(
                "no client keys (COWEST_API_KEYS): the /v1 API, feedback and pass-through included, is open to "
                "whoever reaches %s:%s",
                settings.host,
                settings.port,
            )
        try:
            await asyncio.wait_for(state.aliases.refresh(), 2.0)
        except Exception:  # noqa: BLE001 - Redis may be down at start: the saved aliases, and the loops keep trying
            state.aliases.load_saved()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(domain_specs.load_registered(state.redis), 2.0)

        async def reload_specs(_message=None) -> None:
            await domain_specs.load_registered(state.pubsub_redis)

        async def watch_specs() -> None:
            channel = redis_keys.DOMAINS_CHANGED_CHANNEL
            await watch(
                state.pubsub_redis, channel, reload_specs, reload_specs, settings.alias_refresh_s, "domain spec"
            )

        loops = {"alias cache": state.aliases.run, "spool replay": state.log.run_replayer, "domain watch": watch_specs}
        tasks = [asyncio.create_task(supervised(name, loop)) for name, loop in loops.items()]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await state.log.replay()  # last chance to ship the spool; what is left stays on disk
            await state.aclose()

    docs: dict[str, Any] = {} if settings.docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="CoWest orchestrator", version="0.1.0", lifespan=lifespan, **docs)
    install_error_handlers(app)
    document_errors(
        app,
        ErrorResponse,
        text_routes={"/metrics": "text/plain"},
        stream_routes=("/v1/chat/completions",),
    )
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes)
    for module in (collaborate, chat, models, domains, feedback, health):
        app.include_router(module.router)
    app.include_router(domains.admin_router)
    return app


def service_app() -> FastAPI:
    """The app as `python -m services.orchestrator.app` serves it, built in each worker process."""
    # sse-starlette ends every open stream the moment SIGTERM arrives; ours end on their own (the strong model's
    # stream, bounded by request_deadline_s), so let uvicorn's graceful shutdown drain them instead.
    AppStatus.disable_automatic_graceful_drain()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per upstream call; the trace log has them
    return create_app(OrchestratorSettings())


class NoDelayConfig(uvicorn.Config):
    """uvicorn's config with TCP_NODELAY on the listening socket, which accepted connections inherit. With several
    workers uvicorn binds that socket itself (protocol 0), asyncio then leaves Nagle's algorithm on for every
    connection, and each response waits for a delayed ACK: /healthz took 44 ms with 2 workers, under 1 ms with 1
    (bench/results/orchestrator_overhead.md)."""

    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def main() -> None:
    settings = OrchestratorSettings()
    common: dict[str, Any] = dict(
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=settings.access_log,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),  # drain requests and streams, log their traces
    )
    if settings.workers == 1:
        uvicorn.run(service_app(), **common)
        return
    # Several workers: each its own process with its own clients and spool slot, sharing the port.
    config = NoDelayConfig("services.orchestrator.app:service_app", factory=True, workers=settings.workers, **common)
    Multiprocess(config, sockets=[config.bind_socket()]).run()


if __name__ == "__main__":
    main()
