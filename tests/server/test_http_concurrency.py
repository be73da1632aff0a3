"""Concurrent clients share batched forward passes; a client that leaves frees its slot."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest
from http_helpers import API_KEY, assert_error


def test_32_concurrent_clients(server, model_name):
    forwards_before = server.metric("dllm_forward_passes_total")

    async def main():
        client = openai.AsyncOpenAI(base_url=server.v1, api_key=API_KEY, max_retries=0, timeout=300)

        async def one(i):
            if i % 2:
                return await client.chat.completions.create(
                    model=model_name,
                    messages=[{"role": "user", "content": f"add {i} {i}"}],
                    max_tokens=8,
                    seed=i,
                    temperature=0.5,
                    extra_body={"steps": 8, "block_length": 4},
                )
            stream = await client.completions.create(
                model=model_name,
                prompt=f"sort {i} 3 1",
                max_tokens=8,
                stream=True,
                seed=i,
                extra_body={"steps": 8, "block_length": 4},
            )
            return [chunk async for chunk in stream]

        try:
            return await asyncio.gather(*(one(i) for i in range(32)))
        finally:
            await client.close()

    results = asyncio.run(main())
    assert len(results) == 32
    for i, res in enumerate(results):
        if i % 2:
            assert res.choices[0].finish_reason in ("stop", "length")
        else:
            assert res[-1].choices[0].finish_reason in ("stop", "length")
    m = server.metrics()
    rows_hist_count = m[("dllm_batch_rows_count", ())]
    single_row = m[("dllm_batch_rows_bucket", (("le", "1.0"),))]
    assert rows_hist_count - single_row > 0, "no forward pass batched more than one row"
    # 32 requests x 8 steps would be 256 forwards unbatched.
    assert m[("dllm_forward_passes_total", ())] - forwards_before < 128
    server.wait_idle()


@pytest.mark.parametrize("cache", ["none", "dual"])
def test_disconnect_mid_stream_frees_the_slot(server, model_name, max_context, cache):
    """The aborted request gives back its slot and, with a cache, its K/V pages."""
    aborted_before = server.metric("dllm_request_finished_total", finish_reason="abort")
    # A task prompt and a canvas the demo model answers on (it was trained on up to 48 response
    # tokens and fills a 256-token canvas with EOS): the first block holds text, so a chunk is sent
    # (a block of EOS sends none).
    n = min(64, max_context - 16)
    body = {
        "model": model_name,
        "messages": [{"role": "user", "content": "copy abcdefghijkl"}],
        "stream": True,
        "max_tokens": n,
        "steps": n,
        "block_length": 4,
        "ignore_eos": True,
        "cache": cache,
    }
    with httpx.stream(
        "POST", server.v1 + "/chat/completions", json=body, headers=server.headers, timeout=60
    ) as r:
        assert r.status_code == 200
        events = 0
        for line in r.iter_lines():
            events += line.startswith("data: ")
            if events == 2:  # the opening chunk and the first block's
                m = server.metrics()
                assert m[("dllm_num_requests_running", ())] == 1
                pages, total = m[("dllm_kv_cache_pages_in_use", ())], m[("dllm_kv_cache_pages_total", ())]
                assert (pages > 0) == (cache != "none")
                assert m[("dllm_kv_cache_usage_ratio", ())] == pages / total
                break
    # Leaving the iteration closed the connection: the request is aborted long before its natural end.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if server.metric("dllm_request_finished_total", finish_reason="abort") > aborted_before:
            break
        time.sleep(0.1)
    assert server.metric("dllm_request_finished_total", finish_reason="abort") == aborted_before + 1
    server.wait_idle(timeout=10)
    assert server.metric("dllm_num_requests_running") == 0
    assert server.metric("dllm_kv_cache_pages_in_use") == 0


def test_disconnect_while_waiting_for_json(server, model_name, max_context):
    """A non-streaming client that times out is noticed too (its request aborted, status 499)."""
    aborted_before = server.metric("dllm_request_finished_total", finish_reason="abort")
    n = min(256, max_context - 16)
    body = {"model": model_name, "prompt": "hi", "max_tokens": n, "steps": n, "ignore_eos": True}
    try:
        httpx.post(server.v1 + "/completions", json=body, headers=server.headers, timeout=1.0)
    except httpx.ReadTimeout:
        pass
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if server.metric("dllm_requests_total", endpoint="/v1/completions", status="499") >= 1:
            break
        time.sleep(0.1)
    assert server.metric("dllm_request_finished_total", finish_reason="abort") == aborted_before + 1
    server.wait_idle(timeout=10)


def test_huge_prompts_do_not_slow_other_clients(server, model_name):
    """Six prompts near the body limit at once get their 400 from their length in characters, before
    any tokenizing, while a normal request is served as usual (tokenizing them all took 6 s each and
    slowed the normal request to 20 s)."""
    big = {"model": model_name, "prompt": "hello world " * (3 * 2**20 // 12), "max_tokens": 4}
    small = {"model": model_name, "prompt": "hi", "max_tokens": 4, "steps": 4}

    async def main():
        async with httpx.AsyncClient(base_url=server.v1, headers=server.headers, timeout=120) as c:
            bigs = [asyncio.ensure_future(c.post("/completions", json=big)) for _ in range(6)]
            start = time.monotonic()
            normal = await c.post("/completions", json=small)
            return normal, time.monotonic() - start, await asyncio.gather(*bigs)

    normal, elapsed, bigs = asyncio.run(main())
    assert normal.status_code == 200, normal.text
    assert elapsed < 3.0, elapsed
    for r in bigs:
        assert_error(r, 400, "prompt", "context_length_exceeded")
