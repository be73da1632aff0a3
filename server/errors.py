"""OpenAI error bodies: {"error": {"message", "type", "param", "code"}} with the right HTTP status.

Every failure a client can cause ends here: handlers raise APIError (or let a pydantic
ValidationError / SamplingParams ValueError be translated by the helpers below), and the handlers
installed on the app turn it, unknown routes and unexpected exceptions into the same JSON shape.
"""

from __future__ import annotations

import logging
from dataclasses import fields

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.sampling_params import SamplingParams
from server.protocol import ErrorInfo, ErrorResponse

log = logging.getLogger("dllm.server")

# SamplingParams messages, and the engine's refusals of a cache it cannot serve (no K/V pool, more
# pages than the pool holds), start with the name of the field they are about.
SAMPLING_FIELDS = tuple(f.name for f in fields(SamplingParams))
HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}  # Starlette's own errors


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        *,
        code: str,  # every error names its kind, so clients can branch on it
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def body(self) -> dict:
        info = ErrorInfo(message=self.message, type=self.type, param=self.param, code=self.code)
        return ErrorResponse(error=info).model_dump()

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def invalid_request(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def from_validation_error(exc: ValidationError) -> APIError:
    """The first problem pydantic found, worded like OpenAI's own 400s."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"] if not (isinstance(p, str) and ("[" in p or "-" in p))]
    param = ".".join(loc) or None
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return invalid_request(f"Unrecognized request argument supplied: {param}", param, "unknown_parameter")
    if err["type"] == "missing":
        return invalid_request(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    code = "invalid_type" if err["type"].endswith("_type") else "invalid_value"
    return invalid_request(f"Invalid value for '{param}': {msg}", param, code)


def from_value_error(exc: ValueError, prompt_param: str, max_tokens_param: str = "max_tokens") -> APIError:
    """A SamplingParams or Engine.validate message -> 400 naming the field it is about."""
    msg = str(exc)
    if ("context" in msg and msg.startswith("prompt")) or "max_num_batched_tokens" in msg:
        return invalid_request(msg, prompt_param, "context_length_exceeded")
    first = msg.split(" ", 1)[0]
    if first == "max_tokens":
        return invalid_request(max_tokens_param + msg[len(first) :], max_tokens_param, "invalid_value")
    if first in SAMPLING_FIELDS:
        return invalid_request(msg, first, "invalid_value")
    if "prompt" in msg:
        return invalid_request(msg, prompt_param, "invalid_value")
    return invalid_request(msg)


def install(app: FastAPI) -> None:
    """Error handlers: APIError, Starlette's 404/405, and a last-resort 500."""

    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = "Not found" if exc.status_code == 404 else str(exc.detail)
        code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return APIError(exc.status_code, message, code=code, headers=getattr(exc, "headers", None)).response()

    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return APIError(
            500,
            "The server had an error while processing your request.",
            "server_error",
            code="internal_error",
        ).response()

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
