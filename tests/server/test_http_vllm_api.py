"""What vLLM users expect beyond the OpenAI API, over real HTTP: max_model_len on /v1/models,
/tokenize, /detokenize, /version, X-Request-Id, stream_options.continuous_usage_stats, and an
OpenAPI document that describes the request bodies and error statuses."""

from __future__ import annotations

import json

import httpx
import pytest
from http_helpers import assert_error

from engine.cli import package_version
from models.registry import DEMO_MODEL_DIR
from models.tokenizer import load_tokenizer

SMALL = {"max_tokens": 8, "steps": 8, "block_length": 4}


def test_models_carry_max_model_len(server, model_name, max_context):
    listed = httpx.get(server.v1 + "/models", headers=server.headers).json()["data"]
    assert [m["max_model_len"] for m in listed] == [max_context]
    one = httpx.get(f"{server.v1}/models/{model_name}", headers=server.headers).json()
    assert one["max_model_len"] == max_context


def test_tokenize_prompt_matches_completions(server, model_name, max_context):
    r = httpx.post(
        server.base_url + "/tokenize",
        headers=server.headers,
        json={"model": model_name, "prompt": "copy abc"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"tokens", "count", "max_model_len"}
    assert body["count"] == len(body["tokens"]) > 0 and body["max_model_len"] == max_context
    done = httpx.post(
        server.v1 + "/completions",
        headers=server.headers,
        json={"model": model_name, "prompt": "copy abc", **SMALL},
    )
    assert done.json()["usage"]["prompt_tokens"] == body["count"]


def test_tokenize_messages_matches_chat(server, model_name):
    messages = [{"role": "user", "content": "reverse abc"}]
    r = httpx.post(
        server.base_url + "/tokenize",
        headers=server.headers,
        json={"model": model_name, "messages": messages, "add_generation_prompt": True},
    )
    assert r.status_code == 200, r.text
    chat = httpx.post(
        server.v1 + "/chat/completions",
        headers=server.headers,
        json={"model": model_name, "messages": messages, **SMALL},
    )
    assert chat.json()["usage"]["prompt_tokens"] == r.json()["count"]
    # Without the generation prompt: the template rendered with add_generation_prompt=False (LLaDA's
    # template, and so the demo's, appends the assistant header either way).
    bare = httpx.post(
        server.base_url + "/tokenize",
        headers=server.headers,
        json={"model": model_name, "messages": messages, "add_generation_prompt": False},
    )
    assert bare.status_code == 200, bare.text
    tok = load_tokenizer(DEMO_MODEL_DIR)
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert bare.json()["tokens"] == tok(text, add_special_tokens=False)["input_ids"]


def test_detokenize_round_trip(server, model_name):
    ids = httpx.post(
        server.base_url + "/tokenize", headers=server.headers, json={"prompt": "sort 3 1 2"}
    ).json()
    r = httpx.post(
        server.base_url + "/detokenize",
        headers=server.headers,
        json={"model": model_name, "tokens": ids["tokens"]},
    )
    assert r.status_code == 200 and r.json() == {"prompt": "sort 3 1 2"}


@pytest.mark.parametrize(
    "path,body,status,param",
    [
        ("/detokenize", {"tokens": [-1]}, 400, "tokens"),
        ("/detokenize", {"tokens": [10**9]}, 400, "tokens"),
        ("/detokenize", {"tokens": "abc"}, 400, "tokens"),
        ("/tokenize", {"prompt": "hi", "model": "other"}, 404, "model"),
        ("/tokenize", {"prompt": "hi", "extra": 1}, 400, "extra"),
        ("/tokenize", {}, 400, "prompt"),
    ],
)
def test_tokenizer_endpoints_refuse_bad_input(server, path, body, status, param):
    assert_error(httpx.post(server.base_url + path, headers=server.headers, json=body), status, param)


def test_tokenizer_endpoints_need_the_key(server):
    assert_error(httpx.post(server.base_url + "/tokenize", json={"prompt": "hi"}), 401)
    assert_error(httpx.post(server.base_url + "/detokenize", json={"tokens": [5]}), 401)


def test_version(server):
    r = httpx.get(server.base_url + "/version")
    assert r.status_code == 200 and r.json() == {"version": package_version()}


def test_request_id_echoed_or_generated(server, model_name):
    body = {"model": model_name, "prompt": "hi", **SMALL}
    mine = httpx.post(
        server.v1 + "/completions", headers={**server.headers, "X-Request-Id": "abc-123"}, json=body
    )
    assert mine.status_code == 200 and mine.headers["x-request-id"] == "abc-123"
    ids = {httpx.get(server.base_url + "/health").headers["x-request-id"] for _ in range(2)}
    assert len(ids) == 2 and all(len(i) >= 16 for i in ids)
    # Unusable ids (too long, spaces) are replaced, not echoed; errors carry the id too.
    long = httpx.get(server.base_url + "/health", headers={"X-Request-Id": "x" * 200})
    assert long.headers["x-request-id"] != "x" * 200
    err = httpx.get(server.v1 + "/models", headers={"X-Request-Id": "e-1"})
    assert err.status_code == 401 and err.headers["x-request-id"] == "e-1"


def events(response: httpx.Response) -> list[dict]:
    lines = [line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


@pytest.mark.parametrize("path", ["/chat/completions", "/completions"])
def test_continuous_usage_stats(server, model_name, path):
    prompt = (
        {"messages": [{"role": "user", "content": "copy hello world"}]}
        if "chat" in path
        else {"prompt": "hi"}
    )
    body = {
        "model": model_name,
        **prompt,
        "max_tokens": 12,
        "steps": 12,
        "block_length": 4,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    r = httpx.post(server.v1 + path, headers=server.headers, json=body, timeout=60)
    chunks = events(r)
    usages = [c["usage"] for c in chunks]
    assert all(u is not None for u in usages), chunks
    assert len({u["prompt_tokens"] for u in usages}) == 1
    completion = [u["completion_tokens"] for u in usages]
    assert completion == sorted(completion) and completion[-1] == 12
    assert chunks[-1]["choices"] == [] and usages[-1] == usages[-2]
    # Without continuous_usage_stats: usage only on the last chunk.
    body["stream_options"] = {"include_usage": True}
    plain = events(httpx.post(server.v1 + path, headers=server.headers, json=body, timeout=60))
    assert [c["usage"] is not None for c in plain] == [False] * (len(plain) - 1) + [True]


def test_openapi_describes_bodies_and_errors(server):
    doc = httpx.get(server.base_url + "/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for path, model in (
        ("/v1/chat/completions", "ChatCompletionRequest"),
        ("/v1/completions", "CompletionRequest"),
    ):
        op = doc["paths"][path]["post"]
        body = op["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{model}"}
        assert {"400", "401", "404", "413", "415", "429", "500", "503", "504"} <= set(op["responses"])
        assert "422" not in op["responses"]
        assert set(op["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
        assert "messages" in schemas[model]["properties"] or "prompt" in schemas[model]["properties"]
    assert "stop" in schemas["CompletionRequest"]["properties"]
    assert "text/plain" in doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert doc["paths"]["/v1/models"]["get"]["security"] == [{"bearer": []}]
    assert {"/tokenize", "/detokenize", "/version"} <= set(doc["paths"])


def test_docs_pages_are_off(server):
    """Swagger UI and ReDoc would load their scripts from a CDN."""
    for path in ("/docs", "/redoc"):
        assert httpx.get(server.base_url + path).status_code == 404
