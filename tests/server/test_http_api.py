"""The OpenAI Python client against a real `dllm serve`: chat and completions, streamed and not."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from http_helpers import API_KEY

SMALL = {"steps": 8, "block_length": 4}  # diffusion extensions, sent through extra_body


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.v1, api_key=API_KEY, max_retries=0, timeout=120)


def test_models(client, model_name):
    models = client.models.list()
    assert [m.id for m in models.data] == [model_name]
    assert models.data[0].object == "model"
    assert client.models.retrieve(model_name).id == model_name


def test_chat_completion(client, model_name):
    resp = client.chat.completions.create(
        model=model_name,
        messages=[{"role": "user", "content": "reverse abc"}],
        max_tokens=8,
        temperature=0,
        extra_body=SMALL,
    )
    assert resp.object == "chat.completion" and resp.id.startswith("chatcmpl-")
    assert resp.model == model_name and resp.created > 0
    [choice] = resp.choices
    assert choice.index == 0 and choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    u = resp.usage
    assert u.prompt_tokens > 0 and 0 <= u.completion_tokens <= 8
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens


def test_max_completion_tokens(client, model_name):
    resp = client.chat.completions.create(
        model=model_name,
        messages=[{"role": "user", "content": "hi"}],
        max_completion_tokens=4,
        extra_body={"steps": 4, "ignore_eos": True},
    )
    assert resp.usage.completion_tokens == 4 and resp.choices[0].finish_reason == "length"


def test_completion_prompt_forms(client, model_name):
    text = client.completions.create(model=model_name, prompt="sort 3 1 2", max_tokens=8, extra_body=SMALL)
    assert text.object == "text_completion" and text.id.startswith("cmpl-")
    assert len(text.choices) == 1 and text.choices[0].finish_reason in ("stop", "length")

    many = client.completions.create(
        model=model_name, prompt=["sort 3 1 2", "add 1 2"], max_tokens=8, extra_body=SMALL
    )
    assert [c.index for c in many.choices] == [0, 1]
    assert many.usage.prompt_tokens > text.usage.prompt_tokens

    ids = client.completions.create(model=model_name, prompt=[5, 6, 7, 8], max_tokens=8, extra_body=SMALL)
    assert ids.usage.prompt_tokens == 4
    batch = client.completions.create(
        model=model_name, prompt=[[5, 6], [7, 8, 9]], max_tokens=8, extra_body=SMALL
    )
    assert batch.usage.prompt_tokens == 5 and len(batch.choices) == 2


@pytest.mark.parametrize("seed", [3, 11])
def test_chat_stream_equals_non_stream(client, model_name, seed):
    kwargs = dict(
        model=model_name,
        messages=[{"role": "user", "content": "copy hello world"}],
        max_tokens=12,
        temperature=1.0,
        seed=seed,
        extra_body=SMALL,
    )
    full = client.chat.completions.create(**kwargs)
    stream = client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    *body, last = chunks
    assert last.choices == [] and last.usage.completion_tokens == full.usage.completion_tokens
    assert last.usage.prompt_tokens == full.usage.prompt_tokens
    finishes = [c.choices[0].finish_reason for c in body]
    assert finishes[-1] == full.choices[0].finish_reason and not any(finishes[:-1])
    streamed = "".join(c.choices[0].delta.content or "" for c in body)
    assert streamed == full.choices[0].message.content
    # One chunk per finished block at most (3 blocks of 4), plus the opening and usage chunks.
    assert len(body) <= 1 + 3


def test_completion_stream_equals_non_stream(client, model_name):
    kwargs = dict(
        model=model_name,
        prompt=["reverse abcde", "sort 9 8 7"],
        max_tokens=12,
        temperature=0.7,
        seed=5,
        extra_body=SMALL,
    )
    full = client.completions.create(**kwargs)
    texts, finishes = ["", ""], [None, None]
    for chunk in client.completions.create(**kwargs, stream=True):
        assert chunk.object == "text_completion" and chunk.usage is None
        for c in chunk.choices:
            assert finishes[c.index] is None, "text after the finish_reason chunk"
            texts[c.index] += c.text
            finishes[c.index] = c.finish_reason
    assert texts == [c.text for c in full.choices]
    assert finishes == [c.finish_reason for c in full.choices]


def test_raw_sse_format(server, model_name):
    """The wire format: `data: {json}` events separated by blank lines, then `data: [DONE]`."""
    body = {"model": model_name, "prompt": "hi", "max_tokens": 4, "steps": 4, "stream": True}
    with httpx.stream("POST", server.v1 + "/completions", json=body, headers=server.headers, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    assert all(e.startswith("data: {") for e in events[:-2])


def test_stop_string_cuts_text(client, model_name):
    base = dict(model=model_name, prompt="count 1 2 3", max_tokens=12, temperature=0, extra_body=SMALL)
    full = client.completions.create(**base).choices[0].text
    if len(full) < 3 or "\ufffd" in full[:3]:
        pytest.skip("the model's answer is too short to cut")
    stop = full[1:3]
    cut = client.completions.create(**base, stop=[stop]).choices[0]
    assert cut.text == full[: full.index(stop)] and cut.finish_reason == "stop"


def test_health_and_metrics_need_no_key(server):
    assert httpx.get(server.base_url + "/health").json() == {"status": "ok"}
    r = httpx.get(server.base_url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    for name in (
        "dllm_requests_total",
        "dllm_prompt_tokens_total",
        "dllm_generation_tokens_total",
        "dllm_forward_passes_total",
        "dllm_step_duration_seconds_bucket",
        "dllm_batch_rows_bucket",
        "dllm_num_requests_running",
        "dllm_num_requests_waiting",
        "dllm_cuda_graphs_captured",
        "dllm_cuda_graph_replays",
        "dllm_time_to_first_block_seconds_bucket",
        "dllm_e2e_request_latency_seconds_bucket",
        "dllm_kv_cache_usage_ratio",
        "dllm_kv_cache_pages_in_use",
        "dllm_kv_cache_pages_total",
    ):
        assert name in r.text, name


def test_demo_model_answers_through_the_api(server, model_name, model_dir):
    """With the shipped demo checkpoint, held-out task prompts come back right over HTTP, streamed
    and not (all at once: they share the batch)."""
    from http_helpers import REPO

    if model_dir != REPO / "models" / "demo":
        pytest.skip("needs the shipped demo checkpoint")
    from models.demo_tasks import heldout_examples, is_correct

    examples = [ex for task in ("reverse", "add") for ex in heldout_examples(task, 2)]

    async def main():
        client = openai.AsyncOpenAI(base_url=server.v1, api_key=API_KEY, max_retries=0, timeout=120)

        async def ask(ex):
            kwargs = dict(model=model_name, messages=ex.messages(), temperature=0)
            full = await client.chat.completions.create(**kwargs)
            stream = await client.chat.completions.create(**kwargs, stream=True)
            return full, "".join([c.choices[0].delta.content or "" async for c in stream])

        try:
            return await asyncio.gather(*(ask(ex) for ex in examples))
        finally:
            await client.close()

    for ex, (full, streamed) in zip(examples, asyncio.run(main()), strict=True):
        assert is_correct(ex, full.choices[0].message.content), (ex, full.choices[0].message.content)
        assert full.choices[0].finish_reason == "stop"
        assert streamed == full.choices[0].message.content
