"""The app factory and the routes: parse and check the request, convert it, run it, answer in JSON
or server-sent events. Everything else lives in the modules the handlers call.

    POST /v1/chat/completions   POST /v1/completions   GET /v1/models[/{id}]   (API key if configured)
    POST /tokenize   POST /detokenize   (API key if configured)   GET /version
    GET /health (200 while taking requests; 503 after a fatal engine error, or on a connection
    still open while draining)   GET /metrics (Prometheus text)

Work before admission is bounded: the body by --max-request-bytes, the engine requests of one
request (prompts x n) by --max-prompts-per-request (and the queue), a text prompt by its length in
characters before it is tokenized, then by its length in tokens.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ValidationError

from engine.cli import package_version
from models.tokenizer import max_token_chars
from server import errors, openapi
from server import protocol as p
from server.auth import access_checker, require_json
from server.config import ServerConfig
from server.convert import (
    ChatFormat,
    CompletionFormat,
    ResponseMeta,
    chat_prompt_ids,
    check_prompt_text,
    check_request,
    choice_params,
    completion_prompt_ids,
    sampling_params,
)
from server.errors import APIError, from_validation_error, invalid_request
from server.generation import EventStreamResponse, Generation, collect, sse_stream
from server.logprobs import TokenTexts
from server.metrics import CONTENT_TYPE, Metrics, RequestCounter
from server.request_log import RequestLog
from server.tokenization import detokenize, tokenize


def build_app(engine, config: ServerConfig, metrics: Metrics | None = None) -> FastAPI:
    """An app serving `engine` (an AsyncEngine, started and shut down by the app's lifespan)."""
    metrics = metrics or Metrics()
    metrics.bind(engine)
    created = int(time.time())
    context = engine.engine.max_model_len
    max_prompt_chars = context * max_token_chars(engine.tokenizer) if engine.tokenizer is not None else 0
    max_prompts = min(config.max_prompts_per_request, engine.max_waiting)  # engine requests: prompts x n
    token_texts = TokenTexts(engine.tokenizer)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        engine.start()
        try:
            yield
        finally:
            await engine.shutdown(drain_timeout=0)

    app = FastAPI(
        title="dllm-serve",
        summary="OpenAI-compatible API for masked diffusion LMs",
        version=package_version(),
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load their scripts from a CDN
        redoc_url=None,
    )
    errors.install(app)
    if config.allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.allowed_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-Id"],
            expose_headers=["X-Request-Id"],
        )
    app.add_middleware(RequestCounter, metrics=metrics)
    app.add_middleware(RequestLog)
    access = Depends(access_checker(config.api_key, config.allowed_hosts))
    openapi.install(
        app,
        [
            p.ChatCompletionRequest,
            p.CompletionRequest,
            p.TokenizeCompletionRequest,
            p.TokenizeChatRequest,
            p.DetokenizeRequest,
        ],
        config.served_model_name,
        ("/v1", "/tokenize", "/detokenize"),
        keyed=config.api_key is not None,
    )

    @app.get("/health", responses=openapi.errors(503))
    async def health():
        if engine.failure is not None:
            raise APIError(
                503, f"the engine failed: {engine.failure}", "service_unavailable_error", code="engine_failed"
            )
        if not engine.is_running:
            raise APIError(
                503, "the server is shutting down", "service_unavailable_error", code="server_shutting_down"
            )
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus():
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/version", response_model=p.VersionResponse)
    async def version():
        return {"version": app.version}

    tokenize_doc = openapi.tokenizer_route(
        p.TokenizeResponse, p.TokenizeCompletionRequest, p.TokenizeChatRequest
    )

    @app.post("/tokenize", dependencies=[access], **tokenize_doc)
    async def tokenize_prompt(request: Request):
        data = await _read_json(request)
        model = p.TokenizeChatRequest if "messages" in data else p.TokenizeCompletionRequest
        req = _validate(data, model)
        texts = [m.content for m in req.messages] if model is p.TokenizeChatRequest else [req.prompt]
        if engine.tokenizer is not None:
            check_prompt_text(["".join(texts)], max_prompt_chars, "prompt")
        return (await asyncio.to_thread(tokenize, engine, req)).model_dump()

    detokenize_doc = openapi.tokenizer_route(p.DetokenizeResponse, p.DetokenizeRequest)

    @app.post("/detokenize", dependencies=[access], **detokenize_doc)
    async def detokenize_tokens(request: Request):
        req = _validate(await _read_json(request), p.DetokenizeRequest)
        return (await asyncio.to_thread(detokenize, engine, req)).model_dump()

    v1 = APIRouter(prefix="/v1", dependencies=[access], responses=openapi.errors(*openapi.GUARDED_STATUSES))
    card = p.ModelCard(id=config.served_model_name, created=created, max_model_len=context)

    @v1.get("/models", response_model=p.ModelList)
    async def list_models():
        return p.ModelList(data=[card]).model_dump()

    @v1.get("/models/{model_id:path}", response_model=p.ModelCard, responses=openapi.errors(404))
    async def get_model(model_id: str):
        if model_id != config.served_model_name:
            raise _unknown_model(model_id)
        return card.model_dump()

    @v1.post("/chat/completions", **openapi.generation_route(p.ChatCompletionRequest, p.ChatCompletion))
    async def chat_completions(request: Request):
        arrival = time.monotonic()
        req = await _parse(request, p.ChatCompletionRequest)
        _check_choices(req, 1)
        if engine.tokenizer is not None:
            check_prompt_text(["".join(m.content for m in req.messages)], max_prompt_chars, "messages")
        # Tokenizing runs in a worker thread: a long prompt must not stall the event loop.
        prompts = [await asyncio.to_thread(chat_prompt_ids, engine.tokenizer, req.messages)]
        return await _generate(request, req, ChatFormat, "chatcmpl", prompts, arrival)

    @v1.post("/completions", **openapi.generation_route(p.CompletionRequest, p.Completion))
    async def completions(request: Request):
        arrival = time.monotonic()
        req = await _parse(request, p.CompletionRequest)
        if len(req.prompt) > max_prompts:
            raise invalid_request(
                f"at most {max_prompts} prompts per request; got {len(req.prompt)}", "prompt"
            )
        _check_choices(req, len(req.prompt))
        if isinstance(req.prompt[0], str) and engine.tokenizer is not None:
            check_prompt_text(req.prompt, max_prompt_chars, "prompt")
        prompts = await asyncio.to_thread(completion_prompt_ids, engine.tokenizer, req.prompt)
        return await _generate(request, req, CompletionFormat, "cmpl", prompts, arrival)

    async def _parse(request: Request, model: type[BaseModel]):
        """Body -> protocol model, or the 4xx that says what is wrong with it."""
        return _validate(await _read_json(request), model)

    async def _read_json(request: Request) -> dict:
        """The body as a JSON object, or the 4xx that says what is wrong with it."""
        require_json(request)
        limit = config.max_request_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise APIError(413, f"request body larger than {limit} bytes", code="request_too_large")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise APIError(413, f"request body larger than {limit} bytes", code="request_too_large")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            raise invalid_request(
                "We could not parse the JSON body of your request: send valid JSON "
                "(Content-Type: application/json).",
                code="invalid_json",
            ) from None
        if not isinstance(data, dict):
            raise invalid_request("The request body must be a JSON object.", code="invalid_json")
        bad_text = p.lone_surrogate_path(body, data)
        if bad_text is not None:
            raise invalid_request(
                f"Invalid value for '{bad_text}': the text holds a lone UTF-16 surrogate "
                "(an unpaired \\ud800-\\udfff escape), which is not valid Unicode.",
                bad_text,
            )
        return data

    def _check_choices(req, num_prompts: int) -> None:
        if num_prompts * req.num_choices > max_prompts:
            raise invalid_request(
                f"at most {max_prompts} choices per request (prompts x n); got {num_prompts} x {req.n}", "n"
            )

    def _validate(data: dict, model: type[BaseModel]):
        try:
            req = model.model_validate(data)
        except ValidationError as exc:
            raise from_validation_error(exc) from None
        if req.model is not None and req.model != config.served_model_name:
            raise _unknown_model(req.model)
        unsupported = req.unsupported() if hasattr(req, "unsupported") else None
        if unsupported is not None:
            raise invalid_request(unsupported[1], unsupported[0], "unsupported_parameter")
        return req

    async def _generate(request: Request, req, fmt, prefix: str, prompts: list[list[int]], arrival: float):
        params = sampling_params(req, config.defaults, fmt.prompt_param)
        check_request(engine, prompts, params, fmt.prompt_param, req.max_tokens_param)
        meta = ResponseMeta.new(prefix, config.served_model_name)
        timeout = config.request_timeout_s
        gen = Generation(engine, metrics, None if timeout is None else arrival + timeout, arrival)
        n = req.num_choices
        for i, ids in enumerate(prompts):  # choice index: prompt index * n + j, as OpenAI
            for j, choice in enumerate(choice_params(params, n)):
                await gen.add(ids, choice, f"{meta.id}-{i * n + j}", fmt.prompt_param)
        texts = token_texts if params.logprobs is not None else None
        if req.stream:
            options = req.stream_options or p.StreamOptions()
            return EventStreamResponse(sse_stream(fmt, meta, gen, prompts, options, texts), gen.close)
        finals = await collect(gen, request, fmt.prompt_param)
        if finals is None:  # the client went away; nobody reads this (nginx's "client closed request")
            return Response(status_code=499)
        if texts is None:
            return JSONResponse(fmt.response(meta, prompts, finals, None).model_dump())
        # Logprobs decode every token: off the event loop, as tokenizing is.
        body = await asyncio.to_thread(lambda: fmt.response(meta, prompts, finals, texts).model_dump())
        return JSONResponse(body)

    def _unknown_model(name: str) -> APIError:
        return APIError(
            404,
            f"The model `{name}` does not exist; this server serves `{config.served_model_name}`.",
            param="model",
            code="model_not_found",
        )

    app.include_router(v1)
    return app
