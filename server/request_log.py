"""X-Request-Id and the access log.

Each HTTP request gets an id: the client's `X-Request-Id` when it sends a usable one (1 to 128
printable ASCII characters, no spaces), else a new random one. The response carries it back in
`X-Request-Id`, handlers find it in `request.state.request_id`, and one access-log line per request
(logger `dllm.access`, at info) names it with the method, path, status and duration. uvicorn's own
access log is off, so each request is logged once. (A 500 from an exception no handler caught is
sent by Starlette outside this middleware: its status is logged, but it carries no X-Request-Id.)
"""

from __future__ import annotations

import logging
import re
import time
import uuid

log = logging.getLogger("dllm.access")

HEADER = b"x-request-id"
USABLE_ID = re.compile(rb"[\x21-\x7e]{1,128}")


def client_request_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == HEADER and USABLE_ID.fullmatch(value):
            return value.decode("ascii")
    return None


class RequestLog:
    """ASGI middleware: the request id (echoed, kept in scope state) and the access-log line."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = client_request_id(scope["headers"]) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        start, status = time.monotonic(), 500

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            client = scope.get("client") or ("-", 0)
            log.info(
                '%s:%d "%s %s" %d %.3fs request_id=%s',
                client[0],
                client[1],
                scope["method"],
                scope["path"],
                status,
                time.monotonic() - start,
                request_id,
            )
