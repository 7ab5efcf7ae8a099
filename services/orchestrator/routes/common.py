"""Helpers the routes share: turning a request into a pipeline Question, limits, stage info."""

from __future__ import annotations

from fastapi import Request

from services.orchestrator.deps import AppState
from services.orchestrator.errors import APIError
from services.orchestrator.pipeline import BASE_MODEL, Question, Stage
from services.orchestrator.protocol import ChatMessage, Sampling, StageInfo
from shared.adapters import version_of
from shared.prompts import DraftFormat, get_domain


def check_max_tokens(state: AppState, *stages: Sampling) -> None:
    limit = state.settings.max_tokens_limit
    for sampling in stages:
        if sampling.max_tokens is not None and sampling.max_tokens > limit:
            raise APIError(
                422,
                f"max_tokens {sampling.max_tokens} is above this server's limit of {limit}",
                param="max_tokens",
                code="max_tokens_too_large",
            )


def check_domain(state: AppState, domain: str) -> None:
    if domain not in state.known_domains():
        raise APIError(
            404,
            f"unknown domain {domain!r}; known domains: {', '.join(state.known_domains())}",
            param="domain",
            code="domain_not_found",
        )


async def check_adapter(state: AppState, adapter: str | None) -> None:
    """An adapter override must name an adapter the weak server serves (or `base`)."""
    if adapter is None or adapter == BASE_MODEL:
        return

    def served(cards: list[dict]) -> bool:
        return not cards or any(c.get("id") == adapter != state.settings.endpoints.weak_model for c in cards)

    # A version loaded a moment ago may be missing from the cached list: re-read it before saying no.
    if not served(await state.directory.cards("weak")) and not served(await state.directory.cards("weak", fresh=True)):
        raise APIError(
            404, f"the weak server serves no adapter named {adapter!r}", param="adapter", code="adapter_not_found"
        )


def split_messages(messages: list[ChatMessage]) -> tuple[str, list[dict[str, str]]]:
    """(the question = last user message, the earlier turns as plain history)."""
    if messages[-1].role != "user" or not messages[-1].text().strip():
        raise APIError(400, "the last message must be a non-empty user message", param="messages")
    return messages[-1].text(), [{"role": m.role, "content": m.text()} for m in messages[:-1]]


def make_question(
    request: Request,
    *,
    question: str,
    domain: str,
    history=None,
    context=None,
    draft_format: DraftFormat | None = None,
    weak: Sampling | None = None,
    strong: Sampling | None = None,
    metadata=None,
    api: str = "collaborate",
    adapter: str | None = None,
    mode: str | None = None,
    draft: str | None = None,
) -> Question:
    state = request.state
    return Question(
        question=question,
        domain=domain,
        draft_format=draft_format or get_domain(domain).draft_format,
        context=context,
        history=history or [],
        weak=weak or Sampling(),
        strong=strong or Sampling(),
        metadata=metadata or {},
        adapter=adapter,
        request_id=state.request_id,
        traceparent=state.traceparent,
        api=api,
        trace_id=state.trace_id,
        mode=mode,
        draft=draft,
    )


def stage_info(stage: Stage) -> StageInfo:
    return StageInfo(
        model=stage.model,
        adapter=stage.adapter,
        adapter_version=version_of(stage.adapter),
        latency_ms=stage.latency_ms,
        usage=stage.usage,
    )
