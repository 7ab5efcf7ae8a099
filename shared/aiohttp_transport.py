"""An httpx transport whose HTTP/1.1 engine is aiohttp (C parser, C-accelerated connection pool).

Why: profiling the orchestrator under load (py-spy, `bench/orchestrator_overhead.py`) put half of its CPU in
httpcore, the default engine under httpx (pure-Python h11 parsing, and a pool that polls every idle socket on
every request). With this transport one collaboration costs about half the CPU. The code above it keeps
speaking httpx: requests, responses, timeouts and exception classes are httpx's.

Exceptions are mapped to the httpx classes the callers classify (`shared/upstream.py`): waiting longer than
the pool timeout for one of `max_connections` is `PoolTimeout` (retrying would only queue more); a refused or
failed connect is `ConnectError`, a slow one `ConnectTimeout`; a read that timed out is `ReadTimeout`; a
connection lost or a malformed response is `ReadError`.

A kept-alive connection the server closes just as a request is written to it (uvicorn, under vLLM and these
services, closes one idle for 5 s) fails with nothing sent back. Idle connections are therefore dropped after 4 s,
and a request that still hits that race on a reused connection is sent again once on a new one, POSTs included:
every request this transport carries is a model-server inference, which changes nothing on the server (aiohttp
itself resends only idempotent methods, RFC 9112 9.3.1).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import httpx


def _mapped(exc: BaseException) -> httpx.TransportError:
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, (aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    return httpx.ReadError(message)


_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


async def _on_reuse(session, ctx, params) -> None:
    ctx.trace_request_ctx["reused"] = True


_TRACE_REUSE = aiohttp.TraceConfig()
_TRACE_REUSE.on_connection_reuseconn.append(_on_reuse)
_TRACE_REUSE.freeze()


def _stale_connection(exc: BaseException, ctx: dict) -> bool:
    """A reused connection lost before any answer: the server had closed it (a connect failure is not this)."""
    lost = isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError))
    return lost and not isinstance(exc, aiohttp.ClientConnectorError) and ctx.get("reused", False)


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, transport: AiohttpTransport):
        self._response, self._transport, self._closed = response, transport, False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except _ERRORS as exc:
            raise _mapped(exc) from exc

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._transport.give_back()
            self._response.release()  # back to the pool when fully read, closed otherwise


class AiohttpTransport(httpx.AsyncBaseTransport):
    """`httpx.AsyncClient(transport=AiohttpTransport(max_connections=256))`. Plain HTTP and HTTPS (the system's
    CA bundle, as httpx's default); proxies from the environment stay with httpx, which mounts its own."""

    def __init__(self, *, max_connections: int = 100, keepalive_s: float = 4.0):
        self.max_connections, self.keepalive_s = max_connections, keepalive_s
        # A slot per request, held until its response is closed: the pool's bound, and its wait is httpx's pool
        # timeout (aiohttp's own limit and its connect timeout would not tell waiting from connecting).
        self.slots = asyncio.Semaphore(max_connections)
        self.in_use = 0
        self._session: aiohttp.ClientSession | None = None

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:  # created on first use: aiohttp binds a session to the running loop
            connector = aiohttp.TCPConnector(
                limit=0, keepalive_timeout=self.keepalive_s, ssl=httpx.create_ssl_context()
            )
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, trust_env=False, trace_configs=[_TRACE_REUSE]
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        try:
            body = request.content  # already read for the JSON and bytes bodies this project sends
        except httpx.RequestNotRead:
            body = await request.aread()
        try:
            async with asyncio.timeout(timeout.get("pool")):
                await self.slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout(f"no free connection within {timeout.get('pool')} s") from None
        self.in_use += 1
        try:
            response = await self._send(request, body, timeout)
        except BaseException as exc:
            self.give_back()
            if isinstance(exc, _ERRORS):
                raise _mapped(exc) from exc
            raise
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_ResponseStream(response, self),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()},
        )

    async def _send(self, request: httpx.Request, body: bytes, timeout: dict) -> aiohttp.ClientResponse:
        for attempt in (1, 2):
            ctx: dict = {}
            try:
                return await self._session_now().request(
                    request.method,
                    str(request.url),
                    headers=request.headers.multi_items(),
                    data=body or None,
                    allow_redirects=False,
                    compress=None,
                    trace_request_ctx=ctx,
                    timeout=aiohttp.ClientTimeout(
                        total=None,
                        sock_connect=timeout.get("connect"),
                        sock_read=timeout.get("read"),
                    ),
                )
            except _ERRORS as exc:
                if attempt == 2 or not _stale_connection(exc, ctx):
                    raise
        raise AssertionError("unreachable")

    def give_back(self) -> None:
        self.in_use -= 1
        self.slots.release()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
