"""A real `dllm serve` of a tiny RADD checkpoint in the release's layout, with the tokenizer from a
separate directory (--tokenizer) and RADD's continuous sampler as the server default: plain
completions through the openai client; chat refused with an OpenAI-style 400 (no chat template)."""

from __future__ import annotations

import httpx
import openai
import pytest
from http_helpers import API_KEY, ServerProcess, assert_error

from models.writers.radd import tokenizer_dir, write_tiny_checkpoint


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model_dir = write_tiny_checkpoint(tmp_path_factory.mktemp("radd"))
    log = tmp_path_factory.mktemp("radd_server") / "server.log"
    proc = ServerProcess(
        model_dir, log, "--tokenizer", str(tokenizer_dir(model_dir)), "--sampler", "continuous"
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.v1, api_key=API_KEY, max_retries=0, timeout=120)


def test_completion(client):
    resp = client.completions.create(
        model="model",
        prompt=["The sky is", "Once upon a time"],
        max_tokens=24,
        temperature=1.0,
        seed=5,
        extra_body={"steps": 96, "ignore_eos": True},
    )
    assert [c.index for c in resp.choices] == [0, 1]
    assert all(c.finish_reason == "length" and c.text for c in resp.choices)
    assert resp.usage.completion_tokens == 48


def test_completion_stream_with_token_ids(client):
    chunks = list(
        client.completions.create(
            model="model",
            prompt=[299, 5, 17],  # <|endoftext|> then two ids, as RADD's prefix-conditioned samples
            max_tokens=16,
            temperature=0.0,
            stream=True,
            extra_body={"steps": 64, "ignore_eos": True},
        )
    )
    assert chunks[-1].choices[0].finish_reason == "length"


def test_chat_is_a_clear_400(server):
    resp = httpx.post(
        server.v1 + "/chat/completions",
        headers=server.headers,
        json={"model": "model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        timeout=30,
    )
    err = assert_error(resp, 400, param="messages")
    assert "no chat template" in err["message"] and err["type"] == "invalid_request_error"


def test_mask_id_prompt_is_a_400(server):
    resp = httpx.post(
        server.v1 + "/completions",
        headers=server.headers,
        json={"model": "model", "prompt": [5, 300], "max_tokens": 4},
        timeout=30,
    )
    assert_error(resp, 400, param="prompt")
