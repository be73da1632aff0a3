"""A real `dllm serve` of a tiny LLaDA-MoE checkpoint (release layout), called with the openai client."""

import openai
import pytest
from http_helpers import API_KEY, ServerProcess

from engine import LLM, SamplingParams
from models.tokenizer import load_tokenizer, render_chat
from models.writers.llada_moe import write_tiny_checkpoint

MESSAGES = [{"role": "user", "content": "reverse abcde"}]
SMALL = {"steps": 8, "block_length": 4}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("lladamoe_http") / "LLaDA-MoE-tiny")


@pytest.fixture(scope="module")
def server(ckpt, tmp_path_factory):
    proc = ServerProcess(ckpt, tmp_path_factory.mktemp("lladamoe_server") / "server.log")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.v1, api_key=API_KEY, max_retries=0, timeout=120)


def test_chat_answers_like_the_offline_engine(client, ckpt):
    resp = client.chat.completions.create(
        model="LLaDA-MoE-tiny", messages=MESSAGES, max_tokens=8, temperature=0, extra_body=SMALL
    )
    [choice] = resp.choices
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    # The prompt is the dInfer chat format rendered from the checkpoint's template.
    assert resp.usage.prompt_tokens == len(render_chat(load_tokenizer(ckpt), MESSAGES))
    params = SamplingParams(max_tokens=8, temperature=0.0, **SMALL)
    [offline] = LLM(str(ckpt), device="cpu", dtype="float32", kernels="torch").chat(MESSAGES, params)
    assert choice.message.content == offline.text
    assert resp.usage.completion_tokens == len(offline.token_ids)


def test_streamed_chat_equals_the_whole_answer(client):
    kwargs = dict(model="LLaDA-MoE-tiny", messages=MESSAGES, max_tokens=8, temperature=0, extra_body=SMALL)
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = client.chat.completions.create(stream=True, **kwargs)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole


def test_completion_of_a_plain_prompt(client):
    resp = client.completions.create(
        model="LLaDA-MoE-tiny",
        prompt="The sky is",
        max_tokens=8,
        temperature=0,
        extra_body={**SMALL, "ignore_eos": True},
    )
    assert resp.usage.completion_tokens == 8 and resp.choices[0].finish_reason == "length"
