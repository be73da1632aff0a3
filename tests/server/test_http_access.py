"""Connections and cross-site requests against a real `dllm serve` with no API key: the header
deadline, the connection limit, the Host check, JSON-only bodies, CORS, and X-Request-Id logging."""

from __future__ import annotations

import http.client
import socket
import time

import httpx
import pytest
from http_helpers import ServerProcess, assert_error

HEADER_TIMEOUT_S = 2
MAX_CONNECTIONS = 6
ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def open_server(model_dir, tmp_path_factory):
    proc = ServerProcess(
        model_dir,
        tmp_path_factory.mktemp("open") / "server.log",
        "--header-timeout",
        str(HEADER_TIMEOUT_S),
        "--max-connections",
        str(MAX_CONNECTIONS),
        "--allowed-origins",
        ORIGIN,
        "--log-level",
        "info",
        api_key=None,
    )
    yield proc
    proc.stop()


def connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def seconds_until_closed(sock: socket.socket, limit: float = 10) -> float:
    start = time.monotonic()
    sock.settimeout(limit)
    while sock.recv(4096):  # b"" once the server closed it
        pass
    return time.monotonic() - start


@pytest.mark.parametrize("sent", [b"", b"GET /health HTTP/1.1\r\nHost: localhost\r\n"])
def test_socket_without_complete_headers_is_closed(open_server, sent):
    with connect(open_server) as sock:
        sock.sendall(sent)
        assert seconds_until_closed(sock) < HEADER_TIMEOUT_S + 1.5


def test_slow_body_and_keep_alive_are_not_cut(open_server, model_name):
    """The deadline covers headers only: a body sent after it, and a second request on the same
    connection, are served."""
    body = b'{"model": "' + model_name.encode() + b'", "prompt": "hi", "max_tokens": 4, "steps": 4}'
    conn = http.client.HTTPConnection("127.0.0.1", open_server.port, timeout=30)
    try:
        conn.putrequest("POST", "/v1/completions")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        time.sleep(HEADER_TIMEOUT_S + 0.5)
        conn.send(body)
        first = conn.getresponse()
        assert first.status == 200, first.read()
        first.read()
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_connection_limit(open_server):
    idle = [connect(open_server) for _ in range(MAX_CONNECTIONS - 1)]
    try:
        time.sleep(0.2)
        assert httpx.get(open_server.base_url + "/health").status_code == 503
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.2)
    assert httpx.get(open_server.base_url + "/health").status_code == 200


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:80", "localhost.attacker.example"])
def test_foreign_host_is_refused_without_a_key(open_server, model_name, host):
    headers = {"Host": host, "Content-Type": "application/json"}
    body = {"model": model_name, "prompt": "hi", "max_tokens": 4, "steps": 4}
    assert_error(
        httpx.post(open_server.v1 + "/completions", json=body, headers=headers), 400, code="invalid_host"
    )
    assert_error(httpx.get(open_server.v1 + "/models", headers=headers), 400, code="invalid_host")
    assert_error(
        httpx.post(open_server.base_url + "/tokenize", json=body, headers=headers), 400, code="invalid_host"
    )
    assert httpx.get(open_server.base_url + "/health", headers=headers).status_code == 200


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:8000", "127.0.0.1:8000", "[::1]:8000", "10.1.2.3"])
def test_loopback_name_and_ip_addresses_pass(open_server, host):
    r = httpx.get(open_server.v1 + "/models", headers={"Host": host})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_only_json_bodies(open_server, model_name, content_type):
    body = b'{"model": "' + model_name.encode() + b'", "prompt": "hi", "max_tokens": 4, "steps": 4}'
    headers = {"Content-Type": content_type} if content_type else {}
    for path in ("/v1/completions", "/tokenize"):
        r = httpx.post(open_server.base_url + path, content=body, headers=headers)
        assert_error(r, 415, code="unsupported_media_type")
    ok = httpx.post(
        open_server.v1 + "/completions",
        content=body,
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 200, ok.text


def test_cors(open_server, server):
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    url = open_server.v1 + "/chat/completions"
    allowed = httpx.options(url, headers={"Origin": ORIGIN, **preflight})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
    refused = httpx.options(url, headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in refused.headers
    # The default: no origin is allowed.
    default = httpx.options(server.v1 + "/chat/completions", headers={"Origin": ORIGIN, **preflight})
    assert "access-control-allow-origin" not in default.headers
    r = httpx.get(server.v1 + "/models", headers={"Origin": ORIGIN, **server.headers})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_request_id_is_logged(open_server):
    r = httpx.get(open_server.v1 + "/models", headers={"X-Request-Id": "trace-42"})
    assert r.headers["x-request-id"] == "trace-42"
    deadline = time.monotonic() + 5
    while "request_id=trace-42" not in open_server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    line = next(x for x in open_server.log().splitlines() if "request_id=trace-42" in x)
    assert '"GET /v1/models" 200' in line
