"""`CowestClient` (sync) and `AsyncCowestClient`: one request builder and one error parser, two transports."""

from __future__ import annotations

import os
import uuid
from typing import Any

import httpx
from pydantic import BaseModel
from tenacity import AsyncRetrying, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from cowest_client.models import Collaboration, FeedbackReceipt, ModelCard

RETRY_STATUS = {429, 502, 503, 504}
MAX_RETRY_AFTER_S = 30.0  # a server asking for longer is treated as down: the error goes to the caller


class CowestError(Exception):
    """An error answer (the OpenAI error object's fields) or a request that never got one (status None)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(f"{message} (status {status}, request id {request_id})")
        self.message, self.status, self.type, self.code, self.param = message, status, type, code, param
        self.request_id, self.retry_after = request_id, retry_after

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status in RETRY_STATUS


def _error(response: httpx.Response, request_id: str) -> CowestError:
    try:
        err = response.json().get("error") or {}
    except (ValueError, AttributeError):
        err = {}
    retry_after = response.headers.get("retry-after")
    return CowestError(
        err.get("message") or response.text[:200] or response.reason_phrase,
        status=response.status_code,
        type=err.get("type"),
        code=err.get("code"),
        param=err.get("param"),
        request_id=response.headers.get("x-request-id", request_id),
        retry_after=float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None,
    )


def _wait(state) -> float:
    exc = state.outcome.exception()
    if isinstance(exc, CowestError) and exc.retry_after is not None:
        return min(exc.retry_after, MAX_RETRY_AFTER_S)
    return wait_exponential_jitter(multiplier=0.5, max=8.0)(state)


def _retry_policy(max_retries: int) -> dict[str, Any]:
    return dict(
        stop=stop_after_attempt(max_retries + 1),
        wait=_wait,
        retry=retry_if_exception(lambda e: isinstance(e, CowestError) and e.retryable),
        reraise=True,
    )


def _collaborate_body(question: str | None, domain: str | None, fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in {"question": question, "domain": domain, **fields}.items() if v is not None}


def _feedback_body(trace_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": trace_id, **{k: v for k, v in fields.items() if v is not None}}


class _Base:
    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        max_retries: int = 2,
    ):
        """`base_url` (env COWEST_URL) is the orchestrator's root; `api_key` (env COWEST_API_KEY) one of its
        client keys; `timeout` bounds each attempt (a collaboration runs two models: allow for both)."""
        self.base_url = (base_url or os.environ.get("COWEST_URL") or "http://127.0.0.1:8000").rstrip("/")
        self.base_url = self.base_url.removesuffix("/v1")
        key = api_key or os.environ.get("COWEST_API_KEY")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.timeout, self.max_retries = timeout, max_retries

    def _request_headers(self, request_id: str | None) -> tuple[str, dict[str, str]]:
        rid = request_id or f"req-{uuid.uuid4().hex}"
        return rid, {**self.headers, "X-Request-ID": rid}

    @staticmethod
    def _parsed(response: httpx.Response, rid: str, model: type[BaseModel]) -> Any:
        if response.status_code >= 400:
            raise _error(response, rid)
        return model.model_validate(response.json())


class CowestClient(_Base):
    """Blocking client. Use as a context manager, or call `close()`."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, **kwargs: Any):
        super().__init__(base_url, api_key, **kwargs)
        self._http = httpx.Client(base_url=self.base_url, timeout=self.timeout)

    def __enter__(self) -> CowestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, model: type[BaseModel], request_id: str | None, **kwargs: Any) -> Any:
        rid, headers = self._request_headers(request_id)
        for attempt in Retrying(**_retry_policy(self.max_retries)):
            with attempt:
                try:
                    response = self._http.request(method, path, headers=headers, **kwargs)
                except httpx.TransportError as exc:
                    raise CowestError(f"{type(exc).__name__}: {exc}", request_id=rid) from exc
                return self._parsed(response, rid, model)
        raise AssertionError("unreachable")

    def collaborate(
        self, question: str | None = None, *, domain: str | None = None, request_id: str | None = None, **fields: Any
    ) -> Collaboration:
        """POST /v1/collaborate. `fields`: any other request field (messages, context, mode, draft_format, ...)."""
        body = _collaborate_body(question, domain, fields)
        return self._call("POST", "/v1/collaborate", Collaboration, request_id, json=body)

    def feedback(self, trace_id: str, *, request_id: str | None = None, **fields: Any) -> FeedbackReceipt:
        """POST /v1/feedback on a collaboration's `id`: score (0-1), label, correct_answer, comment, source."""
        return self._call("POST", "/v1/feedback", FeedbackReceipt, request_id, json=_feedback_body(trace_id, **fields))

    def models(self, *, request_id: str | None = None) -> list[ModelCard]:
        return self._call("GET", "/v1/models", _ModelList, request_id).data


class AsyncCowestClient(_Base):
    """The same calls, awaited. Use as an async context manager, or `await aclose()`."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, **kwargs: Any):
        super().__init__(base_url, api_key, **kwargs)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout)

    async def __aenter__(self) -> AsyncCowestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(
        self, method: str, path: str, model: type[BaseModel], request_id: str | None, **kwargs: Any
    ) -> Any:
        rid, headers = self._request_headers(request_id)
        async for attempt in AsyncRetrying(**_retry_policy(self.max_retries)):
            with attempt:
                try:
                    response = await self._http.request(method, path, headers=headers, **kwargs)
                except httpx.TransportError as exc:
                    raise CowestError(f"{type(exc).__name__}: {exc}", request_id=rid) from exc
                return self._parsed(response, rid, model)
        raise AssertionError("unreachable")

    async def collaborate(
        self, question: str | None = None, *, domain: str | None = None, request_id: str | None = None, **fields: Any
    ) -> Collaboration:
        body = _collaborate_body(question, domain, fields)
        return await self._call("POST", "/v1/collaborate", Collaboration, request_id, json=body)

    async def feedback(self, trace_id: str, *, request_id: str | None = None, **fields: Any) -> FeedbackReceipt:
        body = _feedback_body(trace_id, **fields)
        return await self._call("POST", "/v1/feedback", FeedbackReceipt, request_id, json=body)

    async def models(self, *, request_id: str | None = None) -> list[ModelCard]:
        return (await self._call("GET", "/v1/models", _ModelList, request_id)).data


class _ModelList(BaseModel):
    data: list[ModelCard]
