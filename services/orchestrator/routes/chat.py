"""POST /v1/chat/completions, OpenAI-compatible (the collaboration as model `cowest/<domain>`, or a model
server's own model passed through; see services/orchestrator/serving.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from sse_starlette.sse import EventSourceResponse

from services.orchestrator.deps import get_serving, request_context, require_api_key
from services.orchestrator.protocol import ChatCompletionRequest
from services.orchestrator.serving import Serving

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request, serving: Serving = Depends(get_serving)):
    result = await serving.chat(body, request_context(request), request)
    if isinstance(result, AsyncIterator):
        return EventSourceResponse(
            result, ping=15, headers={"X-Accel-Buffering": "no"}, send_timeout=serving.settings.stream_send_timeout_s
        )
    return result
