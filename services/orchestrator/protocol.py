"""Request and response models: the OpenAI-compatible chat API and CoWest's own endpoints."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from shared.domains import DomainSpec
from shared.modes import DefaultMode
from shared.prompts import DraftFormat
from shared.records import Usage

Role = Literal["system", "developer", "user", "assistant", "tool"]
MAX_N = 16  # choices per pass-through request
# OpenAI's limit: up to 4 stop sequences; each short (a stop string is matched against every decoded token).
Stop = (
    Annotated[str, Field(max_length=256)]
    | Annotated[list[Annotated[str, Field(max_length=256)]], Field(max_length=4)]
    | None
)
# Length limits of free-text fields (characters), documented in the README: a field over its limit is a 422
# (400 on the OpenAI routes) naming the field and the limit, never stored or sent on.
MAX_PROMPT_CHARS = 200_000  # a question, a context or one message: bounded again by the body limit (1 MB)
MAX_ANSWER_CHARS = 4_000  # a reference answer is scored by EM/F1 against a model's answer: not a document
MAX_NAME_CHARS = 256  # model, user, label
MAX_NESTING = 16  # JSON depth of a request body (metadata included): deeper is refused, not recursed into


def check_json_input(value: Any, depth: int = 0) -> None:
    """Raise ValueError for what would fail only after the model work: text that cannot be encoded as UTF-8
    (a lone surrogate such as the JSON escape \\ud800, which parsers accept) and nesting deeper than
    MAX_NESTING (a 300-deep `metadata` overflowed the encoder of the trace record)."""
    if depth > MAX_NESTING:
        raise ValueError(f"the request nests deeper than {MAX_NESTING} levels")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text must be valid Unicode: it contains a lone surrogate") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_json_input(key, depth + 1)
            check_json_input(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            check_json_input(item, depth + 1)


class RequestModel(BaseModel):
    """Base of every request body: checks the raw JSON before the fields are validated."""

    @model_validator(mode="before")
    @classmethod
    def _safe_json(cls, data: Any) -> Any:
        check_json_input(data)
        return data


class TextPart(BaseModel):
    type: Literal["text"]
    text: str = Field(max_length=MAX_PROMPT_CHARS)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Role
    content: Annotated[str, Field(max_length=MAX_PROMPT_CHARS)] | list[TextPart] | None = None
    name: str | None = Field(default=None, max_length=MAX_NAME_CHARS)

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class Sampling(BaseModel):
    """Sampling overrides for one stage."""

    model_config = ConfigDict(extra="forbid")
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    stop: Stop = None

    def params(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(RequestModel):
    # Unknown OpenAI parameters are kept: they pass through to the model server unchanged.
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int = Field(default=1, ge=1, le=MAX_N)  # also bounds what pass-through sends a model server
    seed: int | None = None
    stop: Stop = None
    user: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    metadata: dict[str, Any] | None = None
    # CoWest extensions (ignored by the pass-through models).
    draft_format: DraftFormat | None = None
    context: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)

    def sampling(self) -> Sampling:
        return Sampling(
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=self.stop,
        )


class CollaborateRequest(RequestModel):
    model_config = ConfigDict(extra="forbid")
    question: str | None = Field(default=None, min_length=1, max_length=MAX_PROMPT_CHARS)
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    domain: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    context: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    draft_format: DraftFormat | None = None  # None: the domain's (its spec's draft_format)
    # The weak model's LoRA adapter for this request: a version the weak server serves, or "base" for
    # none. Default: the domain's active version (what evaluation of an older version overrides).
    adapter: str | None = Field(default=None, min_length=1, max_length=128)
    return_draft: bool = True
    # collab: the weak draft refined by the strong model; weak / strong: that model alone, through the same
    # requests (how evaluation measures each model). Unset: the server's draft policy decides (by default a
    # domain with no adapter yet is answered by the strong model alone); the response says which ran.
    mode: Literal["collab", "weak", "strong"] | None = None
    # A draft to refine instead of the weak model's (mode collab): your own draft, or a gold rationale to
    # measure the strong model's ceiling (what `cowest eval --modes oracle` does).
    draft: str | None = Field(default=None, min_length=1, max_length=20_000)
    weak: Sampling = Field(default_factory=Sampling)
    strong: Sampling = Field(default_factory=Sampling)
    metadata: dict[str, Any] = Field(default_factory=dict)
    # An end-user id, as OpenAI's `user`: while a domain runs a canary, one user stays on one version.
    user: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    # Look the question up in the domain's knowledge and show the weak model what was found. Unset: the domain's
    # way (its spec's `knowledge.mechanism`; the strong model alone never looks up). true with mode `strong`:
    # strong + retrieval (the strong model alone, given the same facts).
    lookup: bool | None = None

    @model_validator(mode="after")
    def _one_question(self) -> CollaborateRequest:
        if (self.question is None) == (self.messages is None):
            raise ValueError("give exactly one of `question` or `messages`")
        if self.messages is not None and (self.messages[-1].role != "user" or not self.messages[-1].text().strip()):
            raise ValueError("`messages` must end with a non-empty user message")
        if self.question is not None and not self.question.strip():
            raise ValueError("`question` must not be blank")
        if self.draft is not None and self.mode not in (None, "collab"):
            raise ValueError("`draft` is refined by the strong model: it needs mode `collab`")
        return self


class OmitNone(BaseModel):
    """Serialises without its unset (None) fields: what OpenAI leaves out of a delta or a chunk."""

    @model_serializer(mode="wrap")
    def _omit_none(self, handler):
        return {k: v for k, v in handler(self).items() if v is not None}


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"] | None = "stop"
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage
    cowest: dict[str, Any] | None = None  # CoWest extension: trace id, mode, draft, stages


class DeltaMessage(OmitNone):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage = Field(default_factory=DeltaMessage)
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(OmitNone):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice] = Field(default_factory=list)
    usage: Usage | None = None  # the last chunk, with stream_options.include_usage
    cowest: dict[str, Any] | None = None  # the first chunk: trace id, mode, draft; a later one: degraded


class StageInfo(BaseModel):
    model: str | None = None
    adapter: str | None = None
    adapter_version: str | None = None
    latency_ms: float | None = None
    usage: Usage | None = None


class CollaborateResponse(BaseModel):
    id: str
    object: Literal["cowest.collaboration"] = "cowest.collaboration"
    created: int = Field(default_factory=lambda: int(time.time()))
    domain: str
    mode: Literal["collab", "weak", "strong"]  # the path that ran
    mode_reason: str | None = None  # why: the request's mode, the domain's measured default, or the draft policy
    answer: str
    draft: str | None = None
    weak: StageInfo
    strong: StageInfo
    degraded: str | None = None
    latency_ms: float
    # What the knowledge lookup gave the model (null: no lookup ran): the statements shown, and the question's
    # names no statement mentions (the model was told the fact is missing).
    facts: list[str] | None = None
    facts_missing: list[str] | None = None


class FeedbackRequest(RequestModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=128, description="the trace id of a response")
    # The feedback contract: one feedback per trace and source (a second is 409); a score is a finite number
    # in [0, 1] (map stars or thumbs onto it); a correct answer, once given, is the trace's reference.
    source: str = Field(default="user", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    score: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    label: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    correct_answer: str | None = Field(default=None, max_length=MAX_ANSWER_CHARS)
    comment: str | None = Field(default=None, max_length=10_000)

    @model_validator(mode="after")
    def _something(self) -> FeedbackRequest:
        if all(v is None for v in (self.score, self.label, self.correct_answer, self.comment)):
            raise ValueError("give at least one of score, label, correct_answer, comment")
        return self


class FeedbackResponse(BaseModel):
    id: str
    trace_id: str
    status: Literal["accepted"] = "accepted"


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "cowest"
    root: str | None = None
    parent: str | None = None
    # CoWest extensions
    kind: Literal["pipeline", "weak", "strong", "adapter"] = "pipeline"
    domain: str | None = None
    active_adapter: str | None = None
    adapter_version: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class CanaryInfo(BaseModel):
    adapter: str  # the candidate version
    weight: float  # its share of the domain's requests


class DomainInfo(BaseModel):
    name: str
    builtin: bool
    active_adapter: str | None = None
    canary: CanaryInfo | None = None  # a candidate on a share of the traffic, as this orchestrator routes it now
    spec: DomainSpec
    # The mode a request without one gets (with the active adapter) and why; `default_mode_measured`: the
    # measurement behind it (shared/modes.py), when the active version was measured.
    default_mode: Literal["collab", "weak", "strong"] | None = None
    default_mode_reason: str | None = None
    default_mode_measured: DefaultMode | None = None


class DomainList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DomainInfo]


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error the orchestrator answers: OpenAI's error object."""

    error: ErrorInfo
