"""Every ``StreamServerError`` an HTTP route raises becomes OpenAI's error shape here, in one place:
``{"error": {"message", "type", "param", "code"}}`` with the error's ``http_status``. Websocket dialects say the
same errors in their own shape (``Dialect.error``); the HTTP refusal of a websocket handshake uses
``error_response`` too.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.responses import Response

from ..errors import StreamServerError, Unauthorized
from ..metrics import Metrics

HTTP_TRANSPORT = "http"  # the ``transport`` label of errors_total for HTTP routes


def error_body(exc: StreamServerError) -> dict[str, Any]:
    return {"error": {"message": exc.message, "type": exc.error_type, "param": exc.param, "code": exc.code}}


def error_headers(exc: StreamServerError) -> dict[str, str]:
    headers: dict[str, str] = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if exc.http_status in (429, 503):
        headers["Retry-After"] = "1"
    return headers


def error_response(exc: StreamServerError, body: Any = None) -> JSONResponse:
    """The HTTP answer for ``exc`` (``body``: another shape than OpenAI's, for a dialect's refusal)."""
    return JSONResponse(error_body(exc) if body is None else body, exc.http_status, headers=error_headers(exc))


def validation_error_response(exc: RequestValidationError) -> JSONResponse:
    """FastAPI's request validation errors (query/path/body parameters), reshaped like OpenAI's 400s."""
    errors = list(exc.errors())
    first = errors[0] if errors else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    param = ".".join(location) or None
    message = str(first.get("msg", "invalid request"))
    code = "missing_parameter" if first.get("type") == "missing" else "invalid_parameter"
    body = {
        "error": {
            "message": f"{param}: {message}" if param else message,
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }
    }
    return JSONResponse(body, status_code=400)


def install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    """Map errors raised by any HTTP route, counted in ``errors_total{transport="http"}``."""

    async def on_stream_server_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StreamServerError)
        metrics.on_error(HTTP_TRANSPORT, exc.code)
        return error_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        metrics.on_error(HTTP_TRANSPORT, "invalid_parameter")
        return validation_error_response(exc)

    app.add_exception_handler(StreamServerError, on_stream_server_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
