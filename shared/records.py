"""The feedback log's records: one versioned schema for the orchestrator (writer) and the trainer
(reader), on the streams named in shared/redis_keys.py. A stream entry holds `kind`, `schema_version`, the
record's id and its JSON `data`."""

from __future__ import annotations

import time
import uuid
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

SCHEMA_VERSION = 1


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class StreamRecord(BaseModel):
    """Base of every logged record: (de)serialises to and from Redis stream fields."""

    kind: ClassVar[str]
    schema_version: int = SCHEMA_VERSION

    @property
    def record_id(self) -> str:
        raise NotImplementedError

    def to_fields(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "schema_version": str(self.schema_version),
            "id": self.record_id,
            "data": self.model_dump_json(),
        }

    @classmethod
    def from_fields(cls, fields: dict[str, str]):
        if fields.get("kind") != cls.kind:
            raise ValueError(f"not a {cls.kind} record: {fields.get('kind')!r}")
        return cls.model_validate_json(fields["data"])


class TraceRecord(StreamRecord):
    kind: ClassVar[str] = "trace"
    trace_id: str
    created_at: float = Field(default_factory=time.time)
    domain: str
    draft_format: str
    question: str
    context: str | None = None
    history: list[dict[str, str]] = Field(default_factory=list)
    draft: str | None = None
    answer: str | None = None
    weak_model: str | None = None
    weak_adapter: str | None = None  # the versioned adapter name the draft came from
    strong_model: str | None = None
    weak_latency_ms: float | None = None
    strong_latency_ms: float | None = None
    latency_ms: float | None = None
    weak_usage: Usage | None = None
    strong_usage: Usage | None = None
    degraded: str | None = None
    request_id: str | None = None
    api: Literal["collaborate", "chat"] = "collaborate"
    mode: Literal["collab", "weak", "strong"] = "collab"  # the path that answered (shared/collaboration.py)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def record_id(self) -> str:
        return self.trace_id


class FeedbackRecord(StreamRecord):
    kind: ClassVar[str] = "feedback"
    feedback_id: str = Field(default_factory=lambda: f"fb-{uuid.uuid4().hex}")
    trace_id: str
    created_at: float = Field(default_factory=time.time)
    source: str = "user"  # who gave it: one feedback per trace and source
    score: float | None = None  # in [0, 1] (the API refuses others; the trainer ignores them in old records)
    label: str | None = None
    correct_answer: str | None = None
    comment: str | None = None

    @property
    def record_id(self) -> str:
        return self.feedback_id
