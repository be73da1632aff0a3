"""A fatal engine error (repeated step failures, or the engine thread dying) fails the requests in
flight with an error body, turns /health to 503 and ends the process with status 1, so that Docker or
Kubernetes restarts it; faults are injected by fault_serve.py after the warm-up step."""

from __future__ import annotations

import httpx
import pytest
from http_helpers import assert_error, fault_server

MAX_STEP_FAILURES = 3  # engine.async_engine.MAX_CONSECUTIVE_STEP_FAILURES


@pytest.mark.parametrize("fault", ["fail", "die"])
def test_fatal_engine_error_ends_the_process(model_dir, model_name, tmp_path, fault):
    s = fault_server(model_dir, tmp_path / "server.log", fault, "--request-timeout", "20")
    try:
        body = {"model": model_name, "prompt": "hi", "max_tokens": 4, "steps": 4}
        with httpx.Client(base_url=s.v1, headers=s.headers, timeout=30) as c:
            # Step failures fail their requests alone, until MAX_STEP_FAILURES in a row.
            for _ in range(MAX_STEP_FAILURES - 1 if fault == "fail" else 0):
                assert_error(c.post("/completions", json=body), 500, code="engine_error")
            # The fatal one: the request in flight gets an error body, not a hang.
            r = c.post("/completions", json={**body, "stream": True})
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
