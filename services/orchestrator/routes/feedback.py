"""POST /v1/feedback: a score, label, correct answer or comment about one trace."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from services.orchestrator.deps import AppState, get_state, require_api_key
from services.orchestrator.errors import APIError
from services.orchestrator.protocol import FeedbackRequest, FeedbackResponse
from shared.records import FeedbackRecord

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/v1/feedback", response_model=FeedbackResponse, status_code=202)
async def feedback(body: FeedbackRequest, state: AppState = Depends(get_state)) -> FeedbackResponse:
    # None = Redis is unreachable and the trace is not a recent one of this process: accept it
    # (spooled) rather than lose it; the trainer ignores feedback whose trace never shows up.
    if await state.log.trace_known(body.id) is False:
        raise APIError(404, f"no trace with id {body.id!r}", param="id", code="trace_not_found")
    record = FeedbackRecord(
        trace_id=body.id,
        source=body.source,
        score=body.score,
        label=body.label,
        correct_answer=body.correct_answer,
        comment=body.comment,
    )
    if await state.log.log_feedback(record) is None:
        raise APIError(
            409,
            f"{body.source!r} already gave feedback on trace {body.id!r}: one feedback per trace and source",
            param="id",
            code="feedback_exists",
        )
    state.metrics.log_backlog.set(state.log.backlog)
    return FeedbackResponse(id=record.feedback_id, trace_id=body.id)
