"""Engine faults, injected by fault_serve.py after the warm-up step. A step failure that only some
requests cause fails those requests and the server keeps serving; a broken engine (its warm-up
request cannot step either, or the engine thread died) fails the requests in flight with an error
body, turns /health to 503 and ends the process with status 1, so that Docker or Kubernetes
restarts it."""

from __future__ import annotations

import httpx
import pytest
from http_helpers import assert_error, fault_server

BODY = {"prompt": "hi", "max_tokens": 4, "steps": 4}


@pytest.mark.parametrize("fault", ["fail", "die"])
def test_broken_engine_ends_the_process(model_dir, model_name, tmp_path, fault):
    s = fault_server(model_dir, tmp_path / "server.log", fault, "--request-timeout", "20")
    try:
        with httpx.Client(base_url=s.v1, headers=s.headers, timeout=30) as c:
            # The request in flight gets an error body, not a hang.
            r = c.post("/completions", json={"model": model_name, **BODY, "stream": True})
            assert r.status_code in (200, 500, 503), r.text
            if r.status_code == 200:  # the error came after the stream's headers
                assert r.text.endswith("data: [DONE]\n\n") and '"code":' in r.text, r.text
            try:  # the server is going away: 503 while it is still listening
                assert_error(httpx.get(s.base_url + "/health", timeout=5), 503, code="engine_failed")
            except httpx.TransportError:
                pass
        assert s.proc.wait(timeout=30) == 1, s.log()
        assert "engine failed" in s.log(), s.log()
    finally:
        s.stop()


def test_failures_of_some_requests_do_not_end_the_server(model_dir, model_name, tmp_path):
    """Steps holding a max_tokens=7 request fail: those requests get 500s, however many, and others
    are served (no client can bring the server down by repeating a request that hits a bug)."""
    s = fault_server(model_dir, tmp_path / "server.log", "poison")
    try:
        with httpx.Client(base_url=s.v1, headers=s.headers, timeout=30) as c:
            for _ in range(4):
                poison = {"model": model_name, **BODY, "max_tokens": 7, "steps": 7}
                assert_error(c.post("/completions", json=poison), 500, code="engine_error")
            r = c.post("/completions", json={"model": model_name, **BODY})
            assert r.status_code == 200, r.text
        assert httpx.get(s.base_url + "/health", timeout=5).status_code == 200
        assert s.proc.poll() is None, s.log()
    finally:
        s.stop()
