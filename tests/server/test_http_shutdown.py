"""Graceful shutdown: SIGTERM stops new connections, lets in-flight requests finish within the drain
timeout and ends the rest cleanly (an error event and [DONE]), then the process exits."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx
from http_helpers import ServerProcess, assert_error, fault_server


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
        # uvicorn re-raises the SIGTERM it handled once it has shut down: status 143 in a shell.
        assert s.proc.returncode == -signal.SIGTERM, s.log()
        assert "Traceback" not in s.log(), s.log()
    finally:
        s.stop()


def test_step_outlasting_the_drain_deadline(model_dir, model_name, tmp_path):
    """Every step takes 12 s, far past the 1 s drain deadline (and uvicorn's own backstop): each
    request still ends cleanly, at the deadline, with 503 or an error event and [DONE]."""
    s = fault_server(model_dir, tmp_path / "server.log", "slow:12", "--drain-timeout", "1")
    try:
        body = {"model": model_name, "prompt": "hi", "max_tokens": 32, "steps": 32, "ignore_eos": True}

        async def stream(c: httpx.AsyncClient) -> list[str]:
            async with c.stream("POST", "/completions", json={**body, "stream": True}) as r:
                assert r.status_code == 200
                return [
                    line.removeprefix("data: ") async for line in r.aiter_lines() if line.startswith("data: ")
                ]

        async def main():
            async with httpx.AsyncClient(base_url=s.v1, headers=s.headers, timeout=60) as c:
                tasks = [asyncio.ensure_future(stream(c)) for _ in range(4)]
                tasks += [asyncio.ensure_future(c.post("/completions", json=body)) for _ in range(2)]
                await asyncio.sleep(1.5)  # all admitted, the first slow step under way
                start = time.monotonic()
                s.signal(signal.SIGTERM)
                results = await asyncio.gather(*tasks)
                return results, time.monotonic() - start

        results, elapsed = asyncio.run(main())
        for events in results[:4]:
            assert events[-1] == "[DONE]", events
            assert json.loads(events[-2])["error"]["code"] == "server_shutting_down", events
        for r in results[4:]:
            assert_error(r, 503, code="server_shutting_down")
        assert elapsed < 5, elapsed  # at the drain deadline, not when the step ends
        s.proc.wait(timeout=30)
        assert s.proc.returncode == -signal.SIGTERM, s.log()
        assert "Traceback" not in s.log(), s.log()
    finally:
        s.stop()
