"""POST /v1/collaborate: CoWest's own endpoint (question in, answer + draft + stage details out)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from services.orchestrator.deps import get_serving, request_context, require_api_key
from services.orchestrator.protocol import CollaborateRequest, CollaborateResponse
from services.orchestrator.serving import Serving

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/v1/collaborate", response_model=CollaborateResponse, response_model_exclude_none=False)
async def collaborate(
    body: CollaborateRequest, request: Request, serving: Serving = Depends(get_serving)
) -> CollaborateResponse:
    return await serving.collaborate(body, request_context(request))
