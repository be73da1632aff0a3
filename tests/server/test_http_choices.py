"""logprobs / top_logprobs and n > 1 through the OpenAI Python client against the shared server."""

from __future__ import annotations

import openai
import pytest
from http_helpers import API_KEY

SMALL = {"steps": 8, "block_length": 4}  # diffusion extensions, sent through extra_body
CHAT = [{"role": "user", "content": "reverse abcde"}]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.v1, api_key=API_KEY, max_retries=0, timeout=120)


def chat_logprobs(client, model_name, **kwargs):
    return client.chat.completions.create(
        model=model_name,
        messages=CHAT,
        max_tokens=8,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        extra_body=SMALL,
        **kwargs,
    )


def test_chat_logprobs(client, model_name):
    [choice] = chat_logprobs(client, model_name).choices
    content = choice.logprobs.content
    assert content, "no tokens"
    # The tokens' bytes make the answer: one entry per token of the returned text.
    assert b"".join(bytes(t.bytes) for t in content).decode() == choice.message.content
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        # greedy: the committed token is the best alternative (and has one value in the response)
        assert (t.top_logprobs[0].token, t.top_logprobs[0].logprob) == (t.token, t.logprob)
        assert [a.logprob for a in t.top_logprobs] == sorted(
            (a.logprob for a in t.top_logprobs), reverse=True
        )


def test_chat_logprobs_stream(client, model_name):
    whole = chat_logprobs(client, model_name).choices[0]
    text, tokens = "", []
    for chunk in chat_logprobs(client, model_name, stream=True):
        for c in chunk.choices:
            text += c.delta.content or ""
            if c.logprobs is not None:
                # a chunk carries the tokens whose text it adds
                assert b"".join(bytes(t.bytes) for t in c.logprobs.content).decode() == (
                    c.delta.content or ""
                )
                tokens += c.logprobs.content
    assert text == whole.message.content
    assert [(t.token, t.top_logprobs) for t in tokens] == [
        (t.token, t.top_logprobs) for t in whole.logprobs.content
    ]


def test_chat_without_logprobs_has_none(client, model_name):
    resp = client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=4, extra_body=SMALL)
    assert resp.choices[0].logprobs is None


def test_completion_logprobs(client, model_name):
    kwargs = dict(
        model=model_name, prompt="sort 3 1 2", max_tokens=8, temperature=0, logprobs=2, extra_body=SMALL
    )
    choice = client.completions.create(**kwargs).choices[0]
    lp = choice.logprobs
    assert lp.tokens and len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(
        lp.text_offset
    )
    assert "".join(lp.tokens) == choice.text  # the demo model answers in ASCII
    assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(len(lp.tokens))]
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        # the best 2 and the chosen token, which greedy decoding makes the best
        assert 1 <= len(top) <= 3 and top[token] == logprob and logprob == max(top.values())
    streamed = [c for chunk in client.completions.create(**kwargs, stream=True) for c in chunk.choices]
    assert [t for c in streamed if c.logprobs for t in c.logprobs.tokens] == lp.tokens
    assert [o for c in streamed if c.logprobs for o in c.logprobs.text_offset] == lp.text_offset


def sampled(client, model_name, **kwargs):
    body = dict(model=model_name, max_tokens=6, temperature=1.0, extra_body={**SMALL, "ignore_eos": True})
    return client.completions.create(**{**body, **kwargs})


def test_n_choices_with_seeds(client, model_name):
    first = sampled(client, model_name, prompt="count 1 2 3", n=3, seed=7)
    assert [c.index for c in first.choices] == [0, 1, 2]
    one = client.completions.create(
        model=model_name, prompt="count 1 2 3", max_tokens=1, extra_body={"steps": 1}
    )
    # the prompt counts once, every choice's tokens count
    assert first.usage.prompt_tokens == one.usage.prompt_tokens and first.usage.completion_tokens == 3 * 6
    again = sampled(client, model_name, prompt="count 1 2 3", n=3, seed=7)
    assert [c.text for c in again.choices] == [c.text for c in first.choices]
    # choice i has seed + i
    single = sampled(client, model_name, prompt="count 1 2 3", seed=9)
    assert single.choices[0].text == first.choices[2].text


def test_n_with_several_prompts_orders_choices_by_prompt(client, model_name):
    both = sampled(client, model_name, prompt=["count 1 2 3", "sort 9 8 7"], n=2, seed=3)
    assert [c.index for c in both.choices] == [0, 1, 2, 3]
    second = sampled(client, model_name, prompt="sort 9 8 7", n=2, seed=3)
    assert [c.text for c in both.choices[2:]] == [c.text for c in second.choices]


def test_n_streams_every_choice(client, model_name):
    kwargs = dict(
        model=model_name, messages=CHAT, max_tokens=8, temperature=1.0, seed=5, n=2, extra_body=SMALL
    )
    whole = client.chat.completions.create(**kwargs)
    texts, roles, finishes = ["", ""], set(), [None, None]
    for chunk in client.chat.completions.create(**kwargs, stream=True):
        for c in chunk.choices:
            roles |= {c.index} if c.delta.role == "assistant" else set()
            texts[c.index] += c.delta.content or ""
            finishes[c.index] = finishes[c.index] or c.finish_reason
    assert roles == {0, 1}
    assert texts == [c.message.content for c in whole.choices]
    assert finishes == [c.finish_reason for c in whole.choices]


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),  # without logprobs: true, as OpenAI
        ({"n": 0}, "n"),
        ({"n": 17}, "n"),
    ],
)
def test_bad_choices_are_400s(client, model_name, kwargs, param):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=4, **kwargs)
    assert info.value.body["param"] == param


def test_logprobs_end_where_a_stop_string_cuts_the_text(client, model_name):
    base = dict(
        model=model_name, prompt="count 1 2 3", max_tokens=12, temperature=0, logprobs=0, extra_body=SMALL
    )
    full = client.completions.create(**base).choices[0]
    stop = full.text[2:4]
    if len(full.text) < 4 or "\ufffd" in full.text or full.text.index(stop) == 0:
        pytest.skip("the model's answer is too short to cut")
    cut = client.completions.create(**base, stop=[stop]).choices[0]
    tokens = cut.logprobs.tokens
    assert cut.text == full.text[: full.text.index(stop)]
    # The engine's token_ids end with the last token whose text fits before the stop string.
    assert tokens == full.logprobs.tokens[: len(tokens)] and cut.text.startswith("".join(tokens))
    assert len("".join(full.logprobs.tokens[: len(tokens) + 1])) > len(cut.text)
    assert client.completions.create(**base, stop=[stop]).usage.completion_tokens == len(tokens)
    stream = client.completions.create(**base, stop=[stop], stream=True)
    assert [t for chunk in stream for c in chunk.choices if c.logprobs for t in c.logprobs.tokens] == tokens
