"""Liveness, readiness and Prometheus metrics.

/healthz: the process answers. /readyz: 200 while the orchestrator can answer at all: both model servers up
("ready"), or one of them, or Redis, down ("degraded": the degraded modes carry the traffic and the log
spools, so a load balancer must keep sending it requests); 503 only when neither model server answers.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.orchestrator.deps import AppState, get_state
from shared.upstream import UpstreamError

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(state: AppState = Depends(get_state)) -> JSONResponse:
    async def upstream(role: str) -> str:
        try:
            await state.directory.upstreams[role].models()
            return "ok"
        except UpstreamError as exc:
            return f"unavailable ({exc.public})"

    async def redis() -> str:
        try:
            await asyncio.wait_for(state.redis.ping(), 1.0)
            return "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return f"unavailable ({type(exc).__name__})"

    weak, strong, red = await asyncio.gather(upstream("weak"), upstream("strong"), redis())
    checks = {
        "weak": weak,
        "strong": strong,
        "redis": red,
        "log_backlog": state.log.backlog,
        "adapter_aliases": state.aliases.source,
    }
    if weak != "ok" and strong != "ok":
        return JSONResponse({"status": "unready", "checks": checks}, status_code=503)
    status = "ready" if weak == strong == red == "ok" else "degraded"
    return JSONResponse({"status": status, "checks": checks}, status_code=200)


@router.get("/metrics")
async def metrics(state: AppState = Depends(get_state)) -> Response:
    log, m = state.log, state.metrics
    m.log_backlog.set(log.backlog)
    m.log_spool_bytes.set(log.spool_bytes)
    m.log_dropped.set(log.dropped)
    m.log_rejected.set(log.rejected)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
