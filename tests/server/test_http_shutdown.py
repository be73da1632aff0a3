"""Graceful shutdown: SIGTERM stops new connections, lets in-flight requests finish within the drain
timeout and ends the rest cleanly (an error event and [DONE]), then the process exits."""

from __future__ import annotations

import json
import signal
import time

import httpx
from http_helpers import ServerProcess


def read_events(response: httpx.Response) -> list[str]:
    return [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]


def test_sigterm_drains_then_aborts(model_dir, model_name, max_context, tmp_path):
    s = ServerProcess(model_dir, tmp_path / "server.log", "--max-num-seqs", "1", "--drain-timeout", "4")
    try:
        n = min(480, max_context - 16)
        short = {
            "model": model_name,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4,
            "steps": 4,
            "stream": True,
        }
        long = {
            "model": model_name,
            "prompt": ["hi"] * 6,
            "max_tokens": n,
            "steps": n,
            "ignore_eos": True,
            "stream": True,
        }
        with httpx.Client(base_url=s.v1, headers=s.headers, timeout=60) as c:
            with (
                c.stream("POST", "/chat/completions", json=short) as first,
                c.stream("POST", "/completions", json=long) as second,
            ):
                assert first.status_code == second.status_code == 200
                s.signal(signal.SIGTERM)
                time.sleep(0.5)
                try:  # the listening socket is closed (or, if a connection slips in, 503)
                    r = httpx.get(s.base_url + "/health", timeout=5)
                    assert r.status_code == 503
                except httpx.TransportError:
                    pass
                done = read_events(first)
                cut = read_events(second)
        # The short request finished normally.
        assert done[-1] == "[DONE]"
        assert json.loads(done[-2])["choices"][0]["finish_reason"] in ("stop", "length")
        # The long one was still running at the drain deadline: aborted with an error body.
        assert cut[-1] == "[DONE]"
        assert json.loads(cut[-2])["error"]["code"] == "server_shutting_down"
        s.proc.wait(timeout=20)
        # uvicorn re-raises the SIGTERM it handled once it has shut down.
        assert s.proc.returncode in (0, -signal.SIGTERM), s.log()
        assert "Traceback" not in s.log(), s.log()
    finally:
        s.stop()
