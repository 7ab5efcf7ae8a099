"""POST /v1/feedback: a score, label, correct answer or comment about one trace."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from services.orchestrator.deps import AppState, caller, get_state, require_api_key
from services.orchestrator.errors import APIError
from services.orchestrator.protocol import FeedbackRequest, FeedbackResponse
from shared.records import FeedbackRecord

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/v1/feedback", response_model=FeedbackResponse, status_code=202)
async def feedback(
    body: FeedbackRequest, state: AppState = Depends(get_state), key: str | None = Depends(caller)
) -> FeedbackResponse:
    # None = Redis is unreachable and the trace is not a recent one of this process: accept it
    # (spooled) rather than lose it; the trainer ignores feedback whose trace never shows up.
    if await state.log.trace_known(body.id) is False:
        raise APIError(404, f"no trace with id {body.id!r}", param="id", code="trace_not_found")
    # With client keys the source is the caller's key: one feedback per trace and key, whatever `source` says
    # (a client choosing 20 sources gave 20 votes). Without keys `source` is the client's word.
    source = key or body.source
    record = FeedbackRecord(
        trace_id=body.id,
        source=source,
        score=body.score,
        label=body.label,
        correct_answer=body.correct_answer,
        comment=body.comment,
    )
    logged = await state.log.log_feedback(record)
    state.metrics.log_dropped.set(state.log.dropped)
    if logged == "taken":
        raise APIError(
            409,
            f"{source!r} already gave feedback on trace {body.id!r}: one feedback per trace and source",
            param="id",
            code="feedback_exists",
        )
    if logged == "dropped":  # accepted means stored: a feedback that could not be kept is refused, to be resent
        raise APIError(
            503,
            "feedback could not be stored (Redis is unreachable and the local spool is full); send it again later",
            code="feedback_not_stored",
            headers={"Retry-After": "30"},
        )
    state.metrics.log_backlog.set(state.log.backlog)
    return FeedbackResponse(id=record.feedback_id, trace_id=body.id)
