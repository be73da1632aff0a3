"""OpenAI protocol models: what /v1/chat/completions and /v1/completions accept and return.

Requests are strict: an unknown field, a JSON value of the wrong type (no "5" for 5, no 1 for true)
or an OpenAI option this server cannot honour is a 400 that names the field; nothing is coerced or
silently ignored. The diffusion extensions (steps, block_length, cache, ...) are SamplingParams fields
and are range-checked there. Responses follow the OpenAI API reference field for field; `usage` also
carries `num_forward_passes` (model rows the request took, the NFE of diffusion papers).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, WithJsonSchema, field_validator

from engine.sampling_params import MAX_LOGPROBS

STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
MAX_STOP = 16  # stop strings per request
MAX_N = 16  # choices per prompt (each is an engine request, counted against --max-prompts-per-request)

# What the fields normalised by "before" validators accept, for the OpenAPI document.
_TEXT_PART = {
    "type": "object",
    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
    "required": ["type", "text"],
    "additionalProperties": False,
}
_IDS = {"type": "array", "items": {"type": "integer"}, "minItems": 1}
CONTENT_SCHEMA = {"anyOf": [{"type": "string"}, {"type": "array", "items": _TEXT_PART}]}
STOP_SCHEMA = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": MAX_STOP},
        {"type": "null"},
    ]
}
PROMPT_SCHEMA = {
    "anyOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}, "minItems": 1},
        _IDS,
        {"type": "array", "items": _IDS, "minItems": 1},
    ]
}


# A lone UTF-16 surrogate can only come from a \ud800-\udfff escape or raw bytes ED A0-BF: look for
# one in the decoded body only when the raw body holds either.
_MAYBE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


def lone_surrogate_path(raw: bytes, data: Any) -> str | None:
    """Dotted path (as errors name params) of the first string or key of `data` holding a lone
    surrogate, which is not Unicode text (tokenizers and JSON encoders refuse it); None if none."""
    if _MAYBE_SURROGATE.search(raw) is None:
        return None

    def find(value: Any, path: str) -> str | None:
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return path or "body"
            return None
        items = (
            value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        )
        for key, item in items:
            if isinstance(key, str) and find(key, "") is not None:
                return path or "body"  # a key is no param name to echo
            found = find(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
        return None

    try:
        return find(data, "")
    except RecursionError:
        return "body"


class StreamOptions(BaseModel):
    model_config = STRICT
    include_usage: bool = False
    continuous_usage_stats: bool = False  # vLLM's: usage (so far) on every chunk


class ChatMessage(BaseModel):
    model_config = STRICT
    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[str, WithJsonSchema(CONTENT_SCHEMA)]  # a string, or text parts joined by newlines
    name: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts(cls, value):
        if not isinstance(value, list):
            return value
        texts = []
        for part in value:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
                or set(part) != {"type", "text"}
            ):
                raise ValueError('only text content parts ({"type": "text", "text": ...}) are supported')
            texts.append(part["text"])
        return "\n".join(texts)


class _GenerationRequest(BaseModel):
    """Fields shared by chat and completions: OpenAI's, then the diffusion extensions."""

    model_config = STRICT
    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # vLLM's extension: -1 or unset for all tokens
    min_p: float | None = None  # vLLM's extension
    n: int | None = Field(None, ge=1, le=MAX_N)  # choices per prompt; seeds seed, seed + 1, ...
    stream: bool | None = None  # null: false
    stream_options: StreamOptions | None = None
    stop: Annotated[list[str] | None, WithJsonSchema(STOP_SCHEMA)] = None  # a string: a list of one
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    user: str | None = None  # accepted for compatibility; not used
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    # Diffusion extensions (SamplingParams fields; None: the server's, then the checkpoint's default).
    steps: int | None = None
    sampler: str | None = None
    block_length: int | None = None
    cfg_scale: float | None = None
    remasking: str | None = None
    threshold: float | None = None
    factor: float | None = None
    logits_eos_inf: bool | None = None
    confidence_eos_eot_inf: bool | None = None
    early_stop: bool | None = None
    ignore_eos: bool | None = None
    cache: str | None = None  # "none" (exact) | "prefix" | "dual": Fast-dLLM's approximate KV caches

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value):
        if isinstance(value, str):
            value = [value]
        if value is not None and (
            not isinstance(value, list)
            or len(value) > MAX_STOP
            or not all(isinstance(s, str) and s for s in value)
        ):
            raise ValueError(f"stop must be a non-empty string or a list of at most {MAX_STOP} of them")
        return value

    @property
    def num_choices(self) -> int:
        return self.n or 1

    def unsupported(self) -> tuple[str, str] | None:
        """(param, message) for the first option set to something this server cannot do."""
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) not in (None, 0.0):
                return name, f"{name} is not supported (only 0)"
        if self.logit_bias:
            return "logit_bias", "logit_bias is not supported"
        if self.stream_options is not None and not self.stream:
            return "stream_options", "stream_options is only allowed when stream is true"
        return None


class ChatCompletionRequest(_GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    response_format: dict[str, Any] | None = None
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    parallel_tool_calls: bool | None = None

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs_needs_logprobs(cls, value, info: ValidationInfo):
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("top_logprobs is only allowed when logprobs is true")
        return value

    @property
    def num_logprobs(self) -> int | None:
        """Alternatives per token (SamplingParams.logprobs), or None without logprobs."""
        return (self.top_logprobs or 0) if self.logprobs else None

    def unsupported(self) -> tuple[str, str] | None:
        for name in ("tools", "tool_choice", "functions", "function_call"):
            if getattr(self, name) is not None:
                return name, "tool and function calling are not supported"
        if self.response_format not in (None, {"type": "text"}):
            return "response_format", 'only response_format {"type": "text"} is supported'
        if (
            self.max_tokens is not None
            and self.max_completion_tokens is not None
            and self.max_tokens != self.max_completion_tokens
        ):
            return "max_tokens", "max_tokens and max_completion_tokens disagree; set one of them"
        return super().unsupported()

    @property
    def max_tokens_param(self) -> str:
        return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"


class CompletionRequest(_GenerationRequest):
    # Normalised to one entry per choice: strings, or lists of token ids.
    prompt: Annotated[list[str] | list[list[int]], WithJsonSchema(PROMPT_SCHEMA)]
    echo: bool | None = None
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)  # alternatives per token
    best_of: int | None = None
    suffix: str | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_list(cls, value):
        def is_ids(x):
            return isinstance(x, list) and x and all(type(t) is int for t in x)

        if isinstance(value, str):
            return [value]
        if is_ids(value):
            return [value]
        if (
            isinstance(value, list)
            and value
            and (all(isinstance(p, str) for p in value) or all(is_ids(p) for p in value))
        ):
            return value
        raise ValueError(
            "prompt must be a string, a non-empty list of strings, a non-empty list of "
            "token ids, or a list of non-empty token id lists"
        )

    def unsupported(self) -> tuple[str, str] | None:
        if self.echo:
            return "echo", "echo is not supported"
        if self.best_of not in (None, 1):
            return "best_of", "only best_of=1 is supported"
        if self.suffix is not None:
            return "suffix", "suffix is not supported"
        return super().unsupported()

    @property
    def num_logprobs(self) -> int | None:
        return self.logprobs

    @property
    def max_tokens_param(self) -> str:
        return "max_tokens"


# -- responses ---------------------------------------------------------------------------------------
class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    num_forward_passes: int  # extension: model rows this request took (CFG counts one per step)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class ChatTopLogprob(BaseModel):
    token: str  # the tokenizer's decode of the token alone
    logprob: float
    bytes: list[int] | None  # the token's UTF-8 bytes (a piece of a character: its raw bytes)


class ChatTokenLogprob(ChatTopLogprob):
    top_logprobs: list[ChatTopLogprob]  # the best `top_logprobs` tokens, most likely first


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob] | None
    refusal: None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: dict[str, str]  # {"role": "assistant", "content": ""} first, then {"content": ...}, {} last
    logprobs: ChatLogprobs | None = None  # of the tokens whose text this chunk adds
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    system_fingerprint: None = None
    usage: Usage | None = None  # present (null until the usage chunk) only with include_usage


class CompletionLogprobs(BaseModel):
    """Parallel lists, one entry per token; text_offset: where the token starts in the choice's text."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]  # the best `logprobs` tokens and the chosen one
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class Completion(BaseModel):
    """A text completion, and also each streamed chunk of one (OpenAI uses the same object)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    system_fingerprint: None = None
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "dllm-serve"
    max_model_len: int  # vLLM's: prompt + max_tokens may not exceed it


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


# -- /tokenize, /detokenize, /version (vLLM's shapes) --------------------------------------------------
class TokenizeCompletionRequest(BaseModel):
    model_config = STRICT
    model: str | None = None
    prompt: str
    add_special_tokens: bool = False  # false: as /v1/completions tokenizes a prompt


class TokenizeChatRequest(BaseModel):
    model_config = STRICT
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    add_generation_prompt: bool = True  # true: as /v1/chat/completions renders the conversation


class TokenizeResponse(BaseModel):
    tokens: list[int]
    count: int
    max_model_len: int


class DetokenizeRequest(BaseModel):
    model_config = STRICT
    model: str | None = None
    tokens: list[int]


class DetokenizeResponse(BaseModel):
    prompt: str


class VersionResponse(BaseModel):
    version: str
