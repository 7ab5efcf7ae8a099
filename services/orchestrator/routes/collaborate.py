"""POST /v1/collaborate: CoWest's own endpoint (question in, answer + draft + stage details out)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from services.orchestrator.deps import AppState, get_state, require_api_key
from services.orchestrator.protocol import CollaborateRequest, CollaborateResponse
from services.orchestrator.routes.common import (
    check_adapter,
    check_domain,
    check_max_tokens,
    make_question,
    split_messages,
    stage_info,
)
from shared.prompts import DEFAULT_DOMAIN

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/v1/collaborate", response_model=CollaborateResponse, response_model_exclude_none=False)
async def collaborate(
    body: CollaborateRequest, request: Request, state: AppState = Depends(get_state)
) -> CollaborateResponse:
    domain = body.domain or DEFAULT_DOMAIN
    check_domain(state, domain)
    check_max_tokens(state, body.weak, body.strong)
    await check_adapter(state, body.adapter)
    if body.messages:
        question, history = split_messages(body.messages)
    else:
        question, history = body.question, []
    q = make_question(
        request,
        question=question,
        domain=domain,
        history=history,
        context=body.context,
        draft_format=body.draft_format,
        weak=body.weak,
        strong=body.strong,
        metadata=body.metadata,
        adapter=body.adapter,
        mode=body.mode,
        draft=body.draft,
    )
    outcome = await state.collaborator.run(q)
    state.metrics.requests.labels("collaborate", domain, "200").inc()
    return CollaborateResponse(
        id=q.trace_id,
        domain=domain,
        mode=q.mode,
        answer=outcome.answer,
        draft=outcome.draft.text if body.return_draft else None,
        weak=stage_info(outcome.draft),
        strong=stage_info(outcome.strong),
        degraded=outcome.degraded,
        latency_ms=outcome.latency_ms,
    )
