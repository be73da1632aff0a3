"""A long-context checkpoint (UltraLLaDA's fields: rope_theta 2.8e8, 131072 positions) behind a real
`dllm serve` with default limits: a 16,384-token text prompt passes the body, character, token and
per-step position limits, and generates with the dual cache."""

from __future__ import annotations

import httpx
import pytest
from http_helpers import ServerProcess
from transformers import AutoTokenizer


@pytest.mark.slow
def test_16k_token_prompt_is_served_with_default_limits(ultra_ckpt, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(ultra_ckpt)
    prompt = " ".join(f"{i % 97} add {i % 13}" for i in range(3200))
    num_tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert num_tokens >= 16384
    server = ServerProcess(ultra_ckpt, tmp_path / "server.log")
    try:
        body = {
            "model": ultra_ckpt.name,
            "prompt": prompt,
            "max_tokens": 32,
            "block_length": 32,
            "temperature": 0,
            "ignore_eos": True,
            "cache": "dual",
        }
        res = httpx.post(server.v1 + "/completions", json=body, headers=server.headers, timeout=300)
        assert res.status_code == 200, res.text
        usage = res.json()["usage"]
        assert usage["prompt_tokens"] == num_tokens and usage["completion_tokens"] == 32
        model = httpx.get(server.v1 + "/models", headers=server.headers, timeout=10).json()["data"][0]
        assert model["max_model_len"] == 131072
    finally:
        server.stop()
