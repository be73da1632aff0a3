"""Queue limits, the request timeout and a missing K/V cache pool, on a server with one slot, three
queue places, a 3 s limit and --kv-cache-memory 0."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from http_helpers import ServerProcess, assert_error
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture(scope="module")
def small_server(model_dir, tmp_path_factory):
    proc = ServerProcess(
        model_dir,
        tmp_path_factory.mktemp("small") / "server.log",
        "--max-num-seqs",
        "1",
        "--max-waiting",
        "3",
        "--request-timeout",
        "3",
        "--kv-cache-memory",
        "0",
    )
    yield proc
    proc.stop()


async def until_engine_holds(client: httpx.AsyncClient, running: int, waiting: int) -> None:
    for _ in range(100):
        text = (await client.get(client.base_url.join("/metrics"))).text
        values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
        if (values["dllm_num_requests_running"], values["dllm_num_requests_waiting"]) == (running, waiting):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the engine never held the expected requests")


def test_queue_full_and_timeouts(small_server, model_name, max_context):
    s = small_server
    n = min(480, max_context - 16)
    long = {"model": model_name, "max_tokens": n, "steps": n, "ignore_eos": True}

    async def main():
        async with httpx.AsyncClient(base_url=s.v1, headers=s.headers, timeout=60) as c:
            # A: three prompts, one running and two waiting (together they outlast the 3 s limit).
            a = asyncio.create_task(c.post("/completions", json={**long, "prompt": ["hi", "yo", "ho"]}))
            await until_engine_holds(c, running=1, waiting=2)
            # B: streamed, takes the last waiting place; its headers come as soon as it is queued.
            async with c.stream("POST", "/completions", json={**long, "prompt": "hey", "stream": True}) as b:
                assert b.status_code == 200
                # C: no place left.
                full = await c.post(
                    "/chat/completions", json={**long, "messages": [{"role": "user", "content": "x"}]}
                )
                events = [line async for line in b.aiter_lines() if line.startswith("data: ")]
            return await a, full, events

    a, full, events = asyncio.run(main())
    assert_error(full, 429, code="queue_full")
    assert "retry-after" in full.headers
    assert_error(a, 504, code="request_timeout")
    # The stream timed out after its headers: an error event, then [DONE].
    assert events[-1] == "data: [DONE]"
    err = json.loads(events[-2].removeprefix("data: "))
    assert err["error"]["code"] == "request_timeout" and err["error"]["type"] == "timeout_error"
    s.wait_idle(timeout=10)
    assert s.metric("dllm_request_finished_total", finish_reason="abort") == 4
    assert s.metric("dllm_requests_total", endpoint="/v1/chat/completions", status="429") == 1

    # The server serves normally afterwards.
    r = httpx.post(
        s.v1 + "/completions",
        headers=s.headers,
        timeout=60,
        json={"model": model_name, "prompt": "hi", "max_tokens": 4, "steps": 4},
    )
    assert r.status_code == 200, r.text


def test_burst_into_an_idle_server_is_admitted(small_server, model_name):
    """One slot and three queue places hold four requests, however fast they arrive: requests still
    in the engine's inbox count as waiting only beyond the free slot."""
    s = small_server
    body = {"model": model_name, "prompt": "hi", "max_tokens": 16, "steps": 16}

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=s.v1, headers=s.headers, timeout=60) as c:
            responses = await asyncio.gather(*(c.post("/completions", json=body) for _ in range(4)))
        return [r.status_code for r in responses]

    for _ in range(5):
        s.wait_idle(timeout=10)
        assert asyncio.run(burst()) == [200] * 4


def test_cached_request_without_a_pool(small_server, model_name):
    s = small_server
    for path, body in (
        ("/chat/completions", {"messages": [{"role": "user", "content": "reverse abc"}]}),
        ("/completions", {"prompt": "copy abc", "stream": True}),
    ):
        r = httpx.post(s.v1 + path, headers=s.headers, json={"model": model_name, "cache": "prefix", **body})
        err = assert_error(r, 400, "cache", "invalid_value")
        assert "needs a K/V cache pool" in err["message"], err
    m = s.metrics()
    assert m[("dllm_kv_cache_pages_total", ())] == 0 and m[("dllm_kv_cache_usage_ratio", ())] == 0
