"""Every client mistake gets its OpenAI error body and status, and the server keeps answering."""

from __future__ import annotations

import time

import httpx
import pytest
from http_helpers import assert_error

MSG = [{"role": "user", "content": "hi"}]


def chat(**fields) -> dict:
    return {"model": "MODEL", "messages": MSG, "max_tokens": 4, **fields}


def completion(**fields) -> dict:
    return {"model": "MODEL", "prompt": "hi", "max_tokens": 4, **fields}


# (endpoint, body, status, param, code); "MODEL" is replaced by the served name.
CASES = {
    "missing messages": ("chat", {"model": "MODEL"}, 400, "messages", "missing_required_parameter"),
    "missing model": ("chat", {"messages": MSG}, 400, "model", "missing_required_parameter"),
    "missing prompt": ("completions", {"model": "MODEL"}, 400, "prompt", "missing_required_parameter"),
    "empty messages": ("chat", chat(messages=[]), 400, "messages", None),
    "messages not a list": ("chat", chat(messages="hi"), 400, "messages", "invalid_type"),
    "bad role": ("chat", chat(messages=[{"role": "robot", "content": "x"}]), 400, "messages.0.role", None),
    "image part": (
        "chat",
        chat(messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
        400,
        "messages.0.content",
        None,
    ),
    "temperature string": ("chat", chat(temperature="hot"), 400, "temperature", "invalid_type"),
    "max_tokens string": ("chat", chat(max_tokens="4"), 400, "max_tokens", "invalid_type"),
    "max_tokens float": ("completions", completion(max_tokens=4.5), 400, "max_tokens", "invalid_type"),
    "stream not bool": ("chat", chat(stream=1), 400, "stream", "invalid_type"),
    "stop not strings": ("chat", chat(stop=[1]), 400, "stop", None),
    "prompt of floats": ("completions", completion(prompt=[1.5]), 400, "prompt", None),
    "prompt empty list": ("completions", completion(prompt=[]), 400, "prompt", None),
    "more prompts than queue places": ("completions", completion(prompt=["a"] * 257), 400, "prompt", None),
    "more prompts than allowed": (
        "completions",
        completion(prompt=["a"] * 17),
        400,
        "prompt",
        "invalid_value",
    ),
    "more id prompts than allowed": ("completions", completion(prompt=[[5]] * 17), 400, "prompt", None),
    "negative temperature": ("chat", chat(temperature=-1), 400, "temperature", "invalid_value"),
    "max_tokens zero": ("chat", chat(max_tokens=0), 400, "max_tokens", "invalid_value"),
    "max_completion_tokens zero": (
        "chat",
        chat(max_tokens=None, max_completion_tokens=0),
        400,
        "max_completion_tokens",
        "invalid_value",
    ),
    "steps below blocks": (
        "chat",
        chat(max_tokens=8, block_length=2, steps=2),
        400,
        "steps",
        "invalid_value",
    ),
    "bad remasking": ("chat", chat(remasking="sideways"), 400, "remasking", "invalid_value"),
    "cfg_scale huge": ("chat", chat(cfg_scale=1e300), 400, "cfg_scale", "invalid_value"),
    "cfg_scale above the bound": (
        "completions",
        completion(cfg_scale=101),
        400,
        "cfg_scale",
        "invalid_value",
    ),
    "max_tokens 2^70": (
        "completions",
        completion(max_tokens=2**70),
        400,
        "max_tokens",
        "context_length_exceeded",
    ),
    "max_tokens 10000": ("chat", chat(max_tokens=10000), 400, "max_tokens", "context_length_exceeded"),
    "max_completion_tokens 10000": (
        "chat",
        chat(max_tokens=None, max_completion_tokens=10000),
        400,
        "max_completion_tokens",
        "context_length_exceeded",
    ),
    "threshold above 1": ("completions", completion(threshold=1.5), 400, "threshold", "invalid_value"),
    "unknown cache": ("chat", chat(cache="bogus"), 400, "cache", "invalid_value"),
    "cache not a string": ("completions", completion(cache=1), 400, "cache", "invalid_type"),
    "seed too large": ("chat", chat(seed=2**70), 400, "seed", "invalid_value"),
    "token id out of vocab": ("completions", completion(prompt=[10**9]), 400, "prompt", None),
    "n = 0": ("chat", chat(n=0), 400, "n", "invalid_value"),
    "n above 16": ("completions", completion(n=17), 400, "n", "invalid_value"),
    "n x prompts above 16": ("completions", completion(prompt=["a", "b"], n=9), 400, "n", "invalid_value"),
    "top_logprobs 21": ("chat", chat(logprobs=True, top_logprobs=21), 400, "top_logprobs", "invalid_value"),
    "top_logprobs alone": ("chat", chat(top_logprobs=1), 400, "top_logprobs", "invalid_value"),
    "logprobs not a bool": ("chat", chat(logprobs=1), 400, "logprobs", "invalid_type"),
    "completions logprobs 21": ("completions", completion(logprobs=21), 400, "logprobs", "invalid_value"),
    "tools": (
        "chat",
        chat(tools=[{"type": "function", "function": {"name": "f"}}]),
        400,
        "tools",
        "unsupported_parameter",
    ),
    "top_p 0": ("completions", completion(top_p=0), 400, "top_p", "invalid_value"),
    "top_k 0": ("chat", chat(top_k=0), 400, "top_k", "invalid_value"),
    "min_p above 1": ("completions", completion(min_p=1.5), 400, "min_p", "invalid_value"),
    "echo": ("completions", completion(echo=True), 400, "echo", "unsupported_parameter"),
    "stream_options without stream": (
        "chat",
        chat(stream_options={"include_usage": True}),
        400,
        "stream_options",
        "unsupported_parameter",
    ),
    "unknown field": ("chat", chat(temprature=0.5), 400, "temprature", "unknown_parameter"),
    "unknown model": ("chat", {**chat(), "model": "gpt-4"}, 404, "model", "model_not_found"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_request(server, model_name, case):
    endpoint, body, status, param, code = CASES[case]
    if body.get("model") == "MODEL":
        body = {**body, "model": model_name}
    body = {k: v for k, v in body.items() if v is not None}
    r = httpx.post(
        f"{server.v1}/{'chat/completions' if endpoint == 'chat' else endpoint}",
        json=body,
        headers=server.headers,
        timeout=30,
    )
    assert_error(r, status, param, code)


def test_prompt_longer_than_context(server, model_name, max_context):
    for body, param in (
        ({"prompt": [5] * max_context}, "prompt"),
        ({"messages": [{"role": "user", "content": "hi " * max_context}]}, "messages"),
    ):
        url = server.v1 + ("/completions" if "prompt" in body else "/chat/completions")
        r = httpx.post(url, json={"model": model_name, "max_tokens": 4, **body}, headers=server.headers)
        assert_error(r, 400, param, "context_length_exceeded")
    # The prompt fits but the answer would not: the same error, on the field to lower.
    r = httpx.post(
        server.v1 + "/completions",
        headers=server.headers,
        json={"model": model_name, "prompt": [5, 6], "max_tokens": max_context - 1},
    )
    assert_error(r, 400, "max_tokens", "context_length_exceeded")


def test_huge_prompt_is_refused_before_tokenizing(server, model_name):
    """A prompt of 4 MiB (the body limit) gets its 400 at once, not after seconds of tokenizing."""
    text = "ab " * ((4 * 2**20 - 1000) // 3)
    for path, body, param in (
        ("/completions", {"prompt": text}, "prompt"),
        ("/completions", {"prompt": ["hi", text]}, "prompt"),
        ("/chat/completions", {"messages": [{"role": "user", "content": text}]}, "messages"),
    ):
        start = time.monotonic()
        r = httpx.post(
            server.v1 + path, headers=server.headers, timeout=60, json={"model": model_name, **body}
        )
        assert_error(r, 400, param, "context_length_exceeded")
        assert time.monotonic() - start < 2.0


@pytest.mark.parametrize("path", ["/completions", "/chat/completions"])
def test_lone_surrogate_is_a_plain_400(server, model_name, path):
    field = (
        '"prompt": "a\\ud800b"'
        if path == "/completions"
        else ('"messages": [{"role": "user", "content": "a\\ud800b"}]')
    )
    raw = f'{{"model": "{model_name}", {field}}}'.encode()
    r = httpx.post(server.v1 + path, content=raw, headers=server.headers)
    err = assert_error(r, 400, "prompt" if path == "/completions" else "messages.0.content", "invalid_value")
    assert "surrogate" in err["message"] and "TextEncodeInput" not in err["message"], err
    # Anywhere in the body, even in a field the server echoes back.
    raw = f'{{"model": "x\\udfffy", {field.replace("ud800", "u0041")}}}'.encode()
    assert_error(httpx.post(server.v1 + path, content=raw, headers=server.headers), 400, "model")


def test_stream_null_is_false(server, model_name):
    r = httpx.post(
        server.v1 + "/completions",
        headers=server.headers,
        timeout=60,
        json={"model": model_name, "prompt": "hi", "max_tokens": 4, "steps": 4, "stream": None},
    )
    assert r.status_code == 200 and r.json()["object"] == "text_completion", r.text


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b'"text"', b"\xff\xfe\x00", b"[" * 100000])
def test_malformed_json(server, raw):
    r = httpx.post(server.v1 + "/chat/completions", content=raw, headers=server.headers)
    assert_error(r, 400, code="invalid_json")


def test_nan_is_rejected(server, model_name):
    raw = b'{"model": "' + model_name.encode() + b'", "prompt": "hi", "temperature": NaN}'
    r = httpx.post(server.v1 + "/completions", content=raw, headers=server.headers)
    assert_error(r, 400, "temperature")


def test_body_too_large(server, model_name):
    r = httpx.post(
        server.v1 + "/completions",
        headers=server.headers,
        json={"model": model_name, "prompt": "x" * (5 * 2**20)},
    )
    assert_error(r, 413, code="request_too_large")


@pytest.mark.parametrize(
    "headers,code",
    [
        ({}, "missing_api_key"),
        ({"Authorization": "Bearer wrong"}, "invalid_api_key"),
        ({"Authorization": "Basic dGVzdC1rZXk="}, "missing_api_key"),
    ],
)
def test_api_key(server, model_name, headers, code):
    calls = (("POST", "/chat/completions", chat(model=model_name)), ("GET", "/models", None))
    for method, path, body in calls:
        r = httpx.request(method, server.v1 + path, json=body, headers=headers)
        assert_error(r, 401, code=code)


def test_unknown_route_and_method(server):
    assert_error(httpx.get(server.base_url + "/v2/nothing", headers=server.headers), 404)
    assert_error(httpx.get(server.v1 + "/chat/completions", headers=server.headers), 405)
    assert_error(httpx.get(server.v1 + "/models/other", headers=server.headers), 404, code="model_not_found")


def test_still_serving_after_errors(server, model_name):
    assert httpx.get(server.base_url + "/health").status_code == 200
    r = httpx.post(
        server.v1 + "/completions",
        headers=server.headers,
        timeout=60,
        json={"model": model_name, "prompt": "hi", "max_tokens": 4, "steps": 4},
    )
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("stop", "length")
    assert server.metric("dllm_requests_total", endpoint="/v1/chat/completions", status="400") > 0
    assert server.metric("dllm_requests_total", endpoint="/v1/chat/completions", status="401") > 0
