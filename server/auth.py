"""API key check: `Authorization: Bearer KEY` on /v1/* when the server has a key (401 otherwise)."""

from __future__ import annotations

import hmac

from fastapi import Request

from server.errors import APIError


def api_key_checker(api_key: str | None):
    """A FastAPI dependency; with no key configured every request passes."""

    async def check(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise APIError(
                401,
                "You didn't provide an API key. Pass it as 'Authorization: Bearer KEY'.",
                code="missing_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise APIError(
                401,
                "Incorrect API key provided.",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check
