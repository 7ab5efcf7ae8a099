"""Errors as OpenAI error objects: {"error": {"message", "type", "param", "code"}}.

OpenAI-compatible routes answer validation errors with 400 (what OpenAI and vLLM do, so clients
raise BadRequestError); CoWest's own routes answer 422 (FastAPI's convention).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.collaboration import CollaborationFailed

logger = logging.getLogger(__name__)
OPENAI_ROUTES = ("/v1/chat/completions",)
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
    504: "timeout",
}


class APIError(Exception):
    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status_code, self.message, self.code, self.param = status_code, message, code, param
        self.type = type or _TYPES.get(status_code, "server_error")
        self.headers = headers or {}


def error_body(
    status_code: int, message: str, *, code: str | None = None, param: str | None = None, type: str | None = None
) -> dict:
    return {
        "error": {
            "message": message,
            "type": type or _TYPES.get(status_code, "server_error"),
            "param": param,
            "code": code,
        }
    }


def error_response(exc: APIError) -> JSONResponse:
    return JSONResponse(
        error_body(exc.status_code, exc.message, code=exc.code, param=exc.param, type=exc.type),
        status_code=exc.status_code,
        headers=exc.headers,
    )


def _describe(exc: RequestValidationError) -> tuple[str, str | None]:
    parts, param = [], None
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            return f"request body is not valid JSON: {err.get('ctx', {}).get('error', 'parse error')}", None
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        param = param or (".".join(loc) or None)
        where = ".".join(loc) or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request body", param


def route_label(request: Request) -> str:
    """The route template a request matched ("/v1/domains/{name}"), never its raw path: a label per path a client
    makes up would be a new Prometheus series per request (unauthenticated memory growth)."""
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def _count(request: Request, status: int) -> None:
    """Errors count in cowest_requests_total too (the routes count their successes)."""
    state = getattr(request.app.state, "cowest", None)
    if state is not None:
        state.metrics.requests.labels(route_label(request), "-", str(status)).inc()


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        _count(request, exc.status_code)
        return error_response(exc)

    @app.exception_handler(CollaborationFailed)
    async def _unavailable(request: Request, exc: CollaborationFailed) -> JSONResponse:
        """Nothing left to answer with: 503, the failing part as the error code."""
        return await _api_error(request, APIError(503, str(exc), code=exc.code, headers={"Retry-After": "5"}))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _describe(exc)
        status = 400 if request.url.path in OPENAI_ROUTES else 422
        _count(request, status)
        return JSONResponse(error_body(status, message, param=param, code="invalid_request"), status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        _count(request, exc.status_code)
        return JSONResponse(
            error_body(exc.status_code, message), status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s", request.url.path)
        return JSONResponse(
            error_body(500, "internal error; see the orchestrator log", code="internal_error"), status_code=500
        )
