"""ASGI middleware: request ids, trace ids and the request size limit, for every response.

Pure ASGI (not BaseHTTPMiddleware) so streamed responses pass through untouched.
"""

from __future__ import annotations

import json
import re
import uuid

from services.orchestrator.errors import error_body
from services.orchestrator.pipeline import new_trace_id

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:/-]{1,128}$")


class RequestContextMiddleware:
    def __init__(self, app, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        incoming = headers.get("x-request-id", "")
        request_id = incoming if _SAFE_ID.match(incoming) else f"req-{uuid.uuid4().hex}"
        trace_id = new_trace_id()
        state = scope.setdefault("state", {})
        state.update(request_id=request_id, trace_id=trace_id, traceparent=_traceparent(headers.get("traceparent")))
        extra = [(b"x-request-id", request_id.encode()), (b"x-cowest-trace-id", trace_id.encode())]
        started = rejected = False

        async def send_with_ids(message):
            nonlocal started
            if rejected:
                return  # the 413 already went out; drop whatever the app still sends
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        async def reject() -> None:
            nonlocal rejected
            body = json.dumps(
                error_body(413, f"request body larger than {self.max_body_bytes} bytes", code="request_too_large")
            ).encode()
            await send_with_ids(
                {
                    "type": "http.response.start",
                    "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                }
            )
            await send_with_ids({"type": "http.response.body", "body": body})
            rejected = True

        if _too_large(headers.get("content-length"), self.max_body_bytes):
            return await reject()
        received = 0

        async def limited_receive():
            # Bodies without Content-Length (chunked) are counted as they arrive.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request" and not rejected:
                received += len(message.get("body", b""))
                if received > self.max_body_bytes and not started:
                    await reject()
                    return {"type": "http.disconnect"}  # the app stops reading and gives up
            return message

        await self.app(scope, limited_receive, send_with_ids)


def _too_large(content_length: str | None, limit: int) -> bool:
    try:
        return content_length is not None and int(content_length) > limit
    except ValueError:
        return False


def _traceparent(value: str | None) -> str:
    """The caller's W3C traceparent when well-formed, else a new root span to pass to the model servers."""
    if value and re.fullmatch(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", value.strip()):
        return value.strip()
    return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
