"""Dream through what users run: `dllm generate` in a subprocess and a real `dllm serve` called with
the openai client, on the tiny checkpoint in the release's layout (tokenizer files of its custom
DreamTokenizer, ChatML template). Answers must be the offline engine's, token for token."""

from __future__ import annotations

import os
import subprocess
import sys

import openai
import pytest
from http_helpers import API_KEY, REPO, ServerProcess

from engine import LLM, SamplingParams
from models.tokenizer import render_chat
from models.writers.dream import write_tiny_checkpoint

CHAT = [{"role": "user", "content": "Why is the sky blue?"}]
# two blocks of a max_tokens 8 answer, the exact sampler (the release's default is random-order)
SMALL = {"steps": 8, "block_length": 4, "sampler": "exact"}


@pytest.fixture(scope="module")
def dream_dir(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("serve") / "Dream-tiny")


@pytest.fixture(scope="module")
def offline(dream_dir):
    return LLM(str(dream_dir), device="cpu", dtype="float32", kernels="torch", kv_cache_memory=0.01)


@pytest.fixture(scope="module")
def client(dream_dir, tmp_path_factory):
    server = ServerProcess(
        dream_dir, tmp_path_factory.mktemp("dream_server") / "server.log", "--kv-cache-memory", "0.01"
    )
    yield openai.OpenAI(base_url=server.v1, api_key=API_KEY, max_retries=0, timeout=120)
    server.stop()


def test_generate_cli_prints_the_engines_answer(dream_dir, offline):
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1"}
    flags = ["--max-tokens", "8", "--steps", "8", "--block-length", "4", "--temperature", "0"]
    flags += ["--sampler", "exact"]
    res = subprocess.run(
        [sys.executable, "-m", "engine.cli", "generate", "--model", str(dream_dir), "--chat", "--quiet"]
        + flags
        + ["--cache", "dual", "--kv-cache-memory", "0.01", CHAT[0]["content"]],
        capture_output=True,
        timeout=300,
        env=env,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr.decode()
    params = SamplingParams(temperature=0.0, cache="dual", max_tokens=8, **SMALL)
    [out] = offline.chat(CHAT, params)
    assert res.stdout.decode("utf-8") == out.text + "\n"


@pytest.mark.parametrize("cache", ["none", "dual"])
def test_chat_answers_as_the_engine(client, offline, dream_dir, cache):
    kwargs = dict(
        model="Dream-tiny",
        messages=CHAT,
        max_tokens=8,
        temperature=0,
        extra_body={**SMALL, "cache": cache},
    )
    resp = client.chat.completions.create(**kwargs)
    params = SamplingParams(max_tokens=8, temperature=0.0, cache=cache, **SMALL)
    [out] = offline.chat(CHAT, params)
    [choice] = resp.choices
    assert choice.message.content == out.text and choice.finish_reason == out.finish_reason
    assert resp.usage.prompt_tokens == len(render_chat(offline.tokenizer, CHAT))  # the ChatML prompt
    assert resp.usage.completion_tokens == len(out.token_ids)
    streamed = client.chat.completions.create(**kwargs, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == out.text


def test_completion_answers_as_the_engine(client, offline):
    resp = client.completions.create(
        model="Dream-tiny", prompt="The sky is", max_tokens=8, temperature=0, extra_body=SMALL
    )
    [out] = offline.generate(["The sky is"], SamplingParams(max_tokens=8, temperature=0.0, **SMALL))
    assert resp.choices[0].text == out.text
    assert resp.usage.prompt_tokens == len(offline.tokenizer("The sky is")["input_ids"])
