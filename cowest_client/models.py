"""What the client returns: the response bodies of /v1/collaborate, /v1/feedback and /v1/models, typed.

Fields a newer server adds are kept (extra="allow"), so an older client keeps working.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class StageInfo(_Body):
    model: str | None = None
    adapter: str | None = None
    adapter_version: str | None = None
    latency_ms: float | None = None
    usage: dict[str, Any] | None = None


class Collaboration(_Body):
    id: str  # the trace id: what feedback refers to
    domain: str
    mode: Literal["collab", "weak", "strong"]
    answer: str
    draft: str | None = None
    weak: StageInfo
    strong: StageInfo
    degraded: str | None = None  # why an answer was given in a degraded mode, if it was
    latency_ms: float


class FeedbackReceipt(_Body):
    id: str
    trace_id: str
    status: str


class ModelCard(_Body):
    id: str
    kind: str | None = None
    domain: str | None = None
    active_adapter: str | None = None
    adapter_version: str | None = None
