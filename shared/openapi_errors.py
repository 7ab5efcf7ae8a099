"""Error statuses in a service's OpenAPI schema, so a generated client (and schemathesis's conformance checks)
knows every status a route can answer and the body that comes with it.

FastAPI documents only the success response and its own 422. The services answer more: 401/403 from the key
checks, 404/409 from the routes, 413 from the body limit, 429/503/504 from back-pressure and the model servers, and
the error body is the service's own (OpenAI's error object in the orchestrator, `{"detail": ...}` in the trainer).
`document_errors` adds those responses to every operation when the schema is first built.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

DESCRIPTIONS = {
    400: "Bad request: the body is not valid JSON, or (OpenAI routes) fails validation",
    401: "No or wrong API key",
    403: "The key may not do this",
    404: "No such model, domain, adapter or trace",
    409: "Conflicts with the current state (a built-in domain, a canary already running, ...)",
    413: "The body or a field is over its documented limit",
    422: "The body or a parameter fails validation",
    429: "Too many requests in flight; retry after the Retry-After header",
    503: "A part it needs is unavailable (model server, Redis, spool full); retry after Retry-After",
    504: "The request deadline passed",
}
# Before OpenAPI 3.2 a text/event-stream schema describes one event; each `data` is a JSON chunk (the route's
# stream-chunk model), an error object, or "[DONE]".
SSE_EVENT = {
    "type": "object",
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}, "id": {"type": "string"}},
    "required": ["data"],
}
BODY_ONLY = {400, 413}  # an unparsable or oversized body: only operations that take one
PROBES = ("/healthz", "/readyz", "/metrics")  # open, and answer no error body (but /readyz's 503)


def document_errors(
    app: FastAPI,
    error_model: type[BaseModel],
    *,
    statuses: Iterable[int] = tuple(DESCRIPTIONS),
    text_routes: dict[str, str] | None = None,
    stream_routes: Iterable[str] = (),
) -> None:
    """Make `app.openapi()` list `statuses` with `error_model`'s body on every operation but the probes.

    text_routes: path -> media type of a 200 that is not JSON (Prometheus' text format).
    stream_routes: paths whose 200 is a `text/event-stream` when the request asks to stream.
    """
    build = app.openapi
    name = error_model.__name__
    statuses, streams, texts = tuple(statuses), set(stream_routes), text_routes or {}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas[name] = error_model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schemas[name].pop("$defs", {}))
        body = {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if path in texts:
                    responses["200"]["content"] = {texts[path]: {"schema": {"type": "string"}}}
                if path in streams:
                    responses["200"]["content"]["text/event-stream"] = {"schema": SSE_EVENT}
                if path == "/readyz":
                    responses["503"] = {"description": "Neither model server answers", "content": {}}
                    responses["503"]["content"] = responses["200"].get("content", {})
                if path in PROBES:
                    continue
                for status in statuses:
                    if status in BODY_ONLY and "requestBody" not in operation:
                        continue
                    responses[str(status)] = {"description": DESCRIPTIONS[status], "content": body}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
