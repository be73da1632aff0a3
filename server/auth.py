"""Who may call the API, and what a page in a browser cannot make it do.

- API key: with --api-key, /v1/* and /tokenize, /detokenize need `Authorization: Bearer KEY` (401).
- Host: without a key, those paths answer only requests whose Host header is an IP address or an
  allowed name (--allowed-hosts, default `localhost`), else 400 `invalid_host`. A page that rebinds
  its own DNS name to 127.0.0.1 (DNS rebinding) is then refused: its requests carry that name, while
  a page can never send an IP address it was not itself loaded from.
- Content-Type: POST bodies must be `application/json` (415 otherwise): a browser sends JSON across
  sites only after a CORS preflight, which fails unless --allowed-origins lets that origin in, while
  `text/plain` or form bodies need none.
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import Request

from server.errors import APIError


def access_checker(api_key: str | None, allowed_hosts: tuple[str, ...] = ("localhost",)):
    """A FastAPI dependency: the key when one is configured, else the Host check."""
    allowed = {host.lower().rstrip(".") for host in allowed_hosts}

    async def check(request: Request) -> None:
        if api_key is None:
            host = request.headers.get("host", "")
            if not is_allowed_host(host, allowed):
                raise APIError(
                    400,
                    f"Host {host!r} is not allowed: without an API key this server answers only requests "
                    "for an IP address or an allowed name (--allowed-hosts; or set --api-key).",
                    code="invalid_host",
                )
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


def is_allowed_host(header: str, allowed: set[str]) -> bool:
    """`header`: a Host value (`name`, `name:port`, `1.2.3.4:port`, `[::1]:port`); no Host (HTTP/1.0,
    never a browser) passes."""
    if header.startswith("["):
        name = header[1:].partition("]")[0]
    else:
        name = header.rpartition(":")[0] if header.count(":") == 1 else header
    name = name.lower().rstrip(".")
    if not name or "*" in allowed or name in allowed:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def require_json(request: Request) -> None:
    """415 unless the body is declared `application/json` (parameters such as charset allowed)."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise APIError(
            415,
            f"Unsupported Content-Type {media_type or '(none)'!r}: send the body as JSON with "
            "'Content-Type: application/json'.",
            code="unsupported_media_type",
        )
