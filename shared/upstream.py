"""One pooled HTTP client per OpenAI-compatible model server, with explicit timeouts and retries.

Retries (tenacity) cover 429, 5xx and timeouts, honour `Retry-After`, and never happen once a
stream has started delivering tokens. Connection refusals are not retried: the server is down and
the pipeline degrades instead. The client is httpx over aiohttp's engine (`aiohttp_transport.py`: the same
httpx requests, responses and exceptions, half the CPU per call).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from .aiohttp_transport import AiohttpTransport

RETRYABLE_STATUS = {429, 500, 502, 503, 504}


class UpstreamError(Exception):
    def __init__(
        self,
        upstream: str,
        message: str,
        *,
        kind: str = "http",
        status_code: int | None = None,
        retry_after: float | None = None,
        body: dict | None = None,
    ):
        super().__init__(f"{upstream}: {message}")
        self.upstream, self.kind, self.status_code = upstream, kind, status_code
        self.retry_after, self.body = retry_after, body

    @property
    def public(self) -> str:
        """What a client may read: which upstream and how it failed, never its response text (a provider's
        error message can quote part of an API key). The full text goes to the log."""
        how = {
            "timeout": "timed out",
            "unreachable": "unreachable",
            "bad_response": "sent a response that is not JSON",
            "stream": "failed mid-stream",
            "pool": "overloaded (no free connection)",
        }.get(self.kind, f"HTTP {self.status_code}" if self.status_code else "failed")
        return f"{self.upstream}: {how}"

    @property
    def retryable(self) -> bool:
        """Worth another try: rate limits, server errors, timeouts. Not: refused connections, 4xx."""
        return self.kind == "timeout" or self.status_code in RETRYABLE_STATUS


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class Upstream:
    """One model server, or several replicas of it: `base_url` may list several base URLs, comma-separated.
    Requests go round-robin to the replicas not marked down; a replica that refuses the connection is marked
    down for `down_s` and the same request goes to the next one at once (no retry budget spent); a 429/5xx or
    timeout is retried by the retry policy, on the next replica in turn."""

    def __init__(
        self,
        name: str,
        base_url: str | list[str],
        *,
        timeout_s: float,
        connect_timeout_s: float,
        retries: int = 0,
        retry_max_wait_s: float = 20.0,
        api_key: str | None = None,
        deadline_s: float | None = None,
        down_s: float = 5.0,
    ):
        """`timeout_s` bounds each read; `deadline_s` bounds a whole `chat` call, retries and their waits
        included (a server that drips a byte now and then never trips a read timeout)."""
        self.name = name
        self.deadline_s = deadline_s
        urls = base_url.split(",") if isinstance(base_url, str) else base_url
        self.targets = [u.strip().rstrip("/") for u in urls if u.strip()]
        self.down_s = down_s
        self._down_until: dict[str, float] = {}
        self._turn = 0
        self.retries = retries
        self.retry_max_wait_s = retry_max_wait_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            transport=AiohttpTransport(max_connections=256),
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    def _wait(self, retry_state) -> float:
        exc = retry_state.outcome.exception()
        if isinstance(exc, UpstreamError) and exc.retry_after is not None:
            return min(exc.retry_after, self.retry_max_wait_s)
        return wait_exponential_jitter(multiplier=0.5, max=self.retry_max_wait_s)(retry_state)

    def _retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=self._wait,
            reraise=True,
            retry=retry_if_exception(lambda e: isinstance(e, UpstreamError) and e.retryable),
        )

    async def chat(self, payload: dict, headers: dict[str, str] | None = None) -> dict:
        """POST /chat/completions (non-streaming) with retries, within `deadline_s`; returns the parsed body."""
        try:
            async with asyncio.timeout(self.deadline_s):
                return await self._chat(payload, headers)
        except TimeoutError:
            raise UpstreamError(self.name, f"no answer within {self.deadline_s:g} s", kind="timeout") from None

    async def _chat(self, payload: dict, headers: dict[str, str] | None) -> dict:
        async for attempt in self._retrying():
            with attempt:
                response = await self._send(
                    "POST", "/chat/completions", json={**payload, "stream": False}, headers=headers
                )
                try:
                    return response.json()
                except ValueError:
                    raise UpstreamError(
                        self.name, "answered 200 with a body that is not JSON", kind="bad_response"
                    ) from None
        raise AssertionError("unreachable")

    async def stream_chat(self, payload: dict, headers: dict[str, str] | None = None) -> AsyncIterator[dict]:
        """POST a streaming chat; yields parsed chunks. Retries only until the response starts."""
        async for attempt in self._retrying():
            with attempt:
                body = {**payload, "stream": True}
                response = await self._send("POST", "/chat/completions", json=body, headers=headers, stream=True)
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    chunk = json.loads(data)
                except ValueError:
                    raise UpstreamError(self.name, "sent a stream chunk that is not JSON", kind="stream") from None
                if "error" in chunk:
                    raise UpstreamError(self.name, f"stream error: {chunk['error']}", kind="stream", body=chunk)
                yield chunk
        except httpx.TimeoutException as exc:
            raise UpstreamError(self.name, f"timed out mid-stream ({type(exc).__name__})", kind="stream") from exc
        except httpx.TransportError as exc:
            raise UpstreamError(self.name, f"connection lost mid-stream: {exc}", kind="stream") from exc
        finally:
            await response.aclose()

    async def models(self) -> list[dict]:
        response = await self._send("GET", "/models", timeout=5.0)
        return response.json().get("data", [])

    async def proxy(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """Forward a raw request (pass-through models); the caller streams and closes the response."""
        return await self._send(method, path, content=body, headers=headers, stream=True, check=False)

    def _in_turn(self) -> list[str]:
        """The replicas to try for one request: round-robin, those marked down last."""
        if len(self.targets) == 1:
            return self.targets
        self._turn = (self._turn + 1) % len(self.targets)
        order = self.targets[self._turn :] + self.targets[: self._turn]
        now = time.monotonic()
        return sorted(order, key=lambda t: self._down_until.get(t, 0.0) > now)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        timeout: float | None = None,
        stream: bool = False,
        check: bool = True,
        **kwargs,
    ) -> httpx.Response:
        extra: dict[str, Any] = {"timeout": timeout} if timeout else {}
        targets = self._in_turn()
        for i, target in enumerate(targets):
            request = self.client.build_request(method, target + path, **kwargs, **extra)
            try:
                return await self._send_request(request, stream=stream, check=check)
            except UpstreamError as exc:
                if i == len(targets) - 1:
                    raise
                if exc.status_code == 404:
                    continue  # this replica lacks the model (a LoRA version not loaded here yet): try the next
                if exc.kind != "unreachable":
                    raise
                self._down_until[target] = time.monotonic() + self.down_s
        raise AssertionError("unreachable")

    async def _send_request(
        self, request: httpx.Request, *, stream: bool = False, check: bool = True
    ) -> httpx.Response:
        try:
            response = await self.client.send(request, stream=stream)
        except httpx.PoolTimeout as exc:  # every connection busy: another try would only queue more
            raise UpstreamError(self.name, "no free connection (pool timeout)", kind="pool") from exc
        except httpx.TimeoutException as exc:
            raise UpstreamError(self.name, f"timed out ({type(exc).__name__})", kind="timeout") from exc
        except httpx.TransportError as exc:
            raise UpstreamError(self.name, f"unreachable: {type(exc).__name__}: {exc}", kind="unreachable") from exc
        if check and response.status_code >= 400:
            body = (await response.aread()) if stream else response.content
            if stream:
                await response.aclose()
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            message = (parsed or {}).get("error", {}).get("message") if isinstance(parsed, dict) else None
            raise UpstreamError(
                self.name,
                f"HTTP {response.status_code}: {message or body[:200]!r}",
                status_code=response.status_code,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
                body=parsed,
            )
        return response
