"""The approximate K/V caches over HTTP: cached chat requests answer the demo tasks, streamed and not,
and the K/V cache gauges show the pool and give every page back."""

from __future__ import annotations

import openai
import pytest
from http_helpers import API_KEY, REPO


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_cached_chat_answers(server, model_name, model_dir, cache):
    if model_dir != REPO / "models" / "demo":
        pytest.skip("needs the shipped demo checkpoint")
    client = openai.OpenAI(base_url=server.v1, api_key=API_KEY, max_retries=0, timeout=120)
    kwargs = dict(
        model=model_name,
        messages=[{"role": "user", "content": "reverse abcdefghij"}],
        temperature=0,
        extra_body={"cache": cache, "block_length": 8},  # the answer spans two blocks: a refresh
    )
    full = client.chat.completions.create(**kwargs)
    assert full.choices[0].message.content == "jihgfedcba" and full.choices[0].finish_reason == "stop"
    streamed = "".join(
        c.choices[0].delta.content or "" for c in client.chat.completions.create(**kwargs, stream=True)
    )
    assert streamed == "jihgfedcba"
    # The final answer is sent after the request left the scheduler, which frees its pages.
    m = server.metrics()
    assert m[("dllm_kv_cache_pages_total", ())] > 0
    assert m[("dllm_kv_cache_pages_in_use", ())] == 0 and m[("dllm_kv_cache_usage_ratio", ())] == 0
