"""Protocol <-> engine: prompts to token ids, request fields to SamplingParams, engine outputs to
OpenAI responses and stream chunks. No I/O here; the handlers in app.py call these.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, fields, replace

from engine.outputs import RequestOutput
from engine.sampling_params import SamplingParams
from models.tokenizer import render_chat
from server import protocol as p
from server.errors import from_value_error, invalid_request
from server.logprobs import LogprobCursor, TokenLogprob, TokenTexts, chat_logprobs, completion_logprobs

# Request fields copied to SamplingParams under the same name: every field but max_tokens (chat may
# call it max_completion_tokens) and logprobs (OpenAI's is a flag with top_logprobs on chat, a count
# on completions: `num_logprobs`). A test holds the protocol models to this list.
PASSED_FIELDS = tuple(f.name for f in fields(SamplingParams) if f.name not in ("max_tokens", "logprobs"))


@dataclass(frozen=True)
class ResponseMeta:
    id: str
    created: int
    model: str

    @classmethod
    def new(cls, prefix: str, model: str) -> ResponseMeta:
        return cls(f"{prefix}-{uuid.uuid4().hex}", int(time.time()), model)


# -- requests ----------------------------------------------------------------------------------------
def chat_prompt_ids(
    tokenizer, messages: list[p.ChatMessage], add_generation_prompt: bool = True
) -> list[int]:
    if tokenizer is None:
        raise invalid_request(
            "this model has no tokenizer, so no chat template; use /v1/completions with token ids", "messages"
        )
    convo = [{"role": "system" if m.role == "developer" else m.role, "content": m.content} for m in messages]
    try:
        return render_chat(tokenizer, convo, add_generation_prompt)
    except ValueError as exc:
        raise invalid_request(str(exc), "messages") from None
    except Exception as exc:  # a template that raises on this conversation (jinja errors)
        raise invalid_request(f"cannot apply the chat template: {exc}", "messages") from None


def check_prompt_text(texts: list[str], max_chars: int, param: str) -> None:
    """Refuse a prompt that cannot fit the context before paying for tokenizing it: no token covers
    more than the vocabulary's longest token, so a text longer than `max_chars` (context x that
    length) has more tokens than the context holds."""
    for text in texts:
        if len(text) > max_chars:
            raise invalid_request(
                f"the prompt ({len(text)} characters) is longer than the model's context can hold "
                f"(at most {max_chars} characters)",
                param,
                "context_length_exceeded",
            )


def completion_prompt_ids(tokenizer, prompts: list[str] | list[list[int]]) -> list[list[int]]:
    if isinstance(prompts[0], list):
        return [list(ids) for ids in prompts]
    if tokenizer is None:
        raise invalid_request("this model has no tokenizer: send the prompt as token ids", "prompt")
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in prompts]


def sampling_params(
    req: p.ChatCompletionRequest | p.CompletionRequest, defaults: SamplingParams, prompt_param: str
) -> SamplingParams:
    """Request fields over the server defaults; unset ones stay None for the checkpoint's defaults."""
    values = {name: getattr(req, name) for name in PASSED_FIELDS}
    values["max_tokens"] = getattr(req, req.max_tokens_param)
    values["logprobs"] = req.num_logprobs
    if values["threshold"] is not None or values["factor"] is not None:
        # A request that picks one parallel mode must not inherit the other from the server.
        defaults = replace(defaults, threshold=None, factor=None)
    for f in fields(SamplingParams):
        if values.get(f.name) is None:
            values[f.name] = getattr(defaults, f.name)
    try:
        return SamplingParams(**values)
    except ValueError as exc:
        raise from_value_error(exc, prompt_param, req.max_tokens_param) from None


def check_request(
    engine, prompts: list[list[int]], params: SamplingParams, prompt_param: str, max_tokens_param: str
) -> None:
    """Everything the engine would refuse, refused now with a 400 (before any stream starts)."""
    core = engine.engine
    for ids in prompts:  # before Engine.validate, which scans every id
        if len(ids) >= core.max_model_len:
            raise invalid_request(
                f"prompt ({len(ids)} tokens) leaves no room in the model's context of "
                f"{core.max_model_len} tokens",
                prompt_param,
                "context_length_exceeded",
            )
        # Before SamplingParams.resolve, whose steps-per-block check would blame `steps`.
        if params.max_tokens is not None and len(ids) + params.max_tokens > core.max_model_len:
            raise invalid_request(
                f"{max_tokens_param} ({params.max_tokens}) plus the prompt ({len(ids)} tokens) is more "
                f"than the model's context of {core.max_model_len} tokens: at most "
                f"{core.max_model_len - len(ids)}",
                max_tokens_param,
                "context_length_exceeded",
            )
    try:
        resolved = [engine.validate(ids, params) for ids in prompts]
    except ValueError as exc:
        raise from_value_error(exc, prompt_param, max_tokens_param) from None
    for r in resolved:
        # Each zero-commit step costs an engine step: bound the step count like the canvas.
        if r.steps > core.max_model_len:
            raise invalid_request(
                f"steps must be at most {core.max_model_len}; got {r.steps}", "steps", "invalid_value"
            )


def choice_params(params: SamplingParams, num_choices: int) -> list[SamplingParams]:
    """One SamplingParams per choice of a prompt: seeds seed, seed + 1, ... (the engine draws a
    random seed for each when the request has none)."""
    if params.seed is None:
        return [params] * num_choices
    return [replace(params, seed=params.seed + i) for i in range(num_choices)]


# -- responses ---------------------------------------------------------------------------------------
def usage(prompts: list[list[int]], finals: list[RequestOutput]) -> p.Usage:
    prompt_tokens = sum(len(ids) for ids in prompts)
    completion_tokens = sum(len(out.token_ids) for out in finals)
    return p.Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        num_forward_passes=sum(out.num_forward_passes for out in finals),
    )


class ChatFormat:
    """chat.completion / chat.completion.chunk bodies."""

    prompt_param = "messages"

    @staticmethod
    def opening(meta: ResponseMeta, num_choices: int) -> list[p.BaseModel]:
        choices = [
            p.ChatChunkChoice(index=i, delta={"role": "assistant", "content": ""}) for i in range(num_choices)
        ]
        return [p.ChatCompletionChunk(id=meta.id, created=meta.created, model=meta.model, choices=choices)]

    @staticmethod
    def logprobs(texts: TokenTexts, entries: list[TokenLogprob]) -> p.ChatLogprobs:
        return chat_logprobs(texts, entries)

    @staticmethod
    def chunk(
        meta: ResponseMeta, index: int, text: str, finish_reason: str | None, logprobs: p.ChatLogprobs | None
    ) -> p.BaseModel:
        choice = p.ChatChunkChoice(
            index=index,
            delta={"content": text} if text else {},
            logprobs=logprobs,
            finish_reason=finish_reason,
        )
        return p.ChatCompletionChunk(id=meta.id, created=meta.created, model=meta.model, choices=[choice])

    @staticmethod
    def usage_chunk(meta: ResponseMeta, use: p.Usage) -> p.BaseModel:
        return p.ChatCompletionChunk(
            id=meta.id, created=meta.created, model=meta.model, choices=[], usage=use
        )

    @staticmethod
    def response(
        meta: ResponseMeta, prompts: list[list[int]], finals: list[RequestOutput], texts: TokenTexts | None
    ) -> p.BaseModel:
        """`texts`: with logprobs (None: without)."""
        choices = [
            p.ChatChoice(
                index=i,
                message=p.AssistantMessage(content=out.text),
                logprobs=None if texts is None else chat_logprobs(texts, LogprobCursor(texts).take(out)),
                finish_reason=out.finish_reason,
            )
            for i, out in enumerate(finals)
        ]
        return p.ChatCompletion(
            id=meta.id, created=meta.created, model=meta.model, choices=choices, usage=usage(prompts, finals)
        )


class CompletionFormat:
    """text_completion bodies (the streamed chunks are text_completion objects too)."""

    prompt_param = "prompt"

    @staticmethod
    def opening(meta: ResponseMeta, num_choices: int) -> list[p.BaseModel]:
        return []

    @staticmethod
    def logprobs(texts: TokenTexts, entries: list[TokenLogprob]) -> p.CompletionLogprobs:
        return completion_logprobs(texts, entries)

    @staticmethod
    def chunk(
        meta: ResponseMeta,
        index: int,
        text: str,
        finish_reason: str | None,
        logprobs: p.CompletionLogprobs | None,
    ) -> p.BaseModel:
        choice = p.CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=finish_reason)
        return p.Completion(id=meta.id, created=meta.created, model=meta.model, choices=[choice])

    @staticmethod
    def usage_chunk(meta: ResponseMeta, use: p.Usage) -> p.BaseModel:
        return p.Completion(id=meta.id, created=meta.created, model=meta.model, choices=[], usage=use)

    @staticmethod
    def response(
        meta: ResponseMeta, prompts: list[list[int]], finals: list[RequestOutput], texts: TokenTexts | None
    ) -> p.BaseModel:
        """`texts`: with logprobs (None: without)."""
        choices = [
            p.CompletionChoice(
                index=i,
                text=out.text,
                logprobs=None
                if texts is None
                else completion_logprobs(texts, LogprobCursor(texts).take(out)),
                finish_reason=out.finish_reason,
            )
            for i, out in enumerate(finals)
        ]
        return p.Completion(
            id=meta.id, created=meta.created, model=meta.model, choices=choices, usage=usage(prompts, finals)
        )
