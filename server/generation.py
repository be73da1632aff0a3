"""Running the engine requests behind one HTTP request, as a JSON body or as server-sent events.

One HTTP request = one engine request per choice (`n` per prompt; chat has one prompt), each
pumped by its own task into a shared queue. Tasks, not inline iteration, because cancelling them is
synchronous: whatever ends the HTTP request (client gone, timeout, shutdown, a bug) aborts every
unfinished engine request through `Generation.close()`, even inside a cancelled finally block.
Admission errors (bad request, queue full, engine stopped) surface in `add`, before any byte of
the response is sent, so they get a real HTTP status; errors after that end a stream with an
OpenAI error event and `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import StreamingResponse

from engine.async_engine import EngineDeadError, QueueFullError
from engine.outputs import RequestOutput
from engine.sampling_params import SamplingParams
from server.convert import usage
from server.errors import APIError, from_value_error
from server.logprobs import LogprobCursor, TokenTexts
from server.metrics import Metrics
from server.protocol import StreamOptions

log = logging.getLogger("dllm.server")

DONE = b"data: [DONE]\n\n"


class Generation:
    def __init__(self, engine, metrics: Metrics, deadline: float | None, arrival: float):
        self.engine, self.metrics, self.deadline, self.arrival = engine, metrics, deadline, arrival
        self._queue: asyncio.Queue[tuple[int, RequestOutput | Exception]] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._admitted: set[int] = set()  # indices the engine took (their ends count in the metrics)

    async def add(
        self, prompt_ids: list[int], params: SamplingParams, request_id: str, prompt_param: str
    ) -> None:
        """Queue one engine request; raises APIError if the engine does not take it."""
        index = len(self._tasks)
        task = asyncio.ensure_future(self._pump(index, prompt_ids, params, request_id))
        self._tasks.append(task)
        await asyncio.sleep(0)  # the pump runs generate() up to its first wait: admission is decided
        if task.done():
            self.close()
            raise admission_error(task.result(), prompt_param)
        self._admitted.add(index)
        self.metrics.prompt_tokens.inc(len(prompt_ids))

    @property
    def num_requests(self) -> int:
        return len(self._tasks)

    async def _pump(self, index, prompt_ids, params, request_id) -> Exception | None:
        num_tokens, reason = None, "abort"
        try:
            async for out in self.engine.generate(prompt_ids, params, request_id):
                now = time.monotonic()
                if num_tokens is None:
                    self.metrics.time_to_first_block.observe(now - self.arrival)
                    num_tokens = 0
                self.metrics.generation_tokens.inc(max(0, len(out.token_ids) - num_tokens))
                num_tokens = len(out.token_ids)
                if out.finished:
                    reason = out.finish_reason or "abort"
                    self.metrics.e2e_latency.observe(now - self.arrival)
                self._queue.put_nowait((index, out))
        except Exception as exc:  # handed to the consumer; returned for add() to raise
            reason = "error"
            self._queue.put_nowait((index, exc))
            return exc
        finally:
            if index in self._admitted:
                self.metrics.finished.labels(reason).inc()
        return None

    async def outputs(self) -> AsyncIterator[tuple[int, RequestOutput]]:
        """(choice index, output) in arrival order until every request finished; TimeoutError at
        the deadline; an engine error raises here."""
        remaining = len(self._tasks)
        while remaining:
            timeout = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
            index, item = await asyncio.wait_for(self._queue.get(), timeout)
            if isinstance(item, Exception):
                raise item
            remaining -= item.finished
            yield index, item

    def close(self) -> None:
        """Abort every engine request that has not finished (synchronous on purpose)."""
        for task in self._tasks:
            task.cancel()


def admission_error(exc: Exception, prompt_param: str) -> APIError:
    if isinstance(exc, QueueFullError):
        return APIError(
            429, f"{exc}; retry later", "rate_limit_error", code="queue_full", headers={"Retry-After": "1"}
        )
    if isinstance(exc, EngineDeadError):
        return engine_dead_error(exc)
    if isinstance(exc, ValueError):
        return from_value_error(exc, prompt_param)
    log.error("engine request failed: %r", exc)
    return APIError(500, f"engine error: {exc}", "server_error", code="engine_error")


def engine_dead_error(exc: EngineDeadError) -> APIError:
    if exc.failed:
        return APIError(503, f"the engine failed: {exc}", "service_unavailable_error", code="engine_failed")
    return APIError(
        503, "the server is shutting down", "service_unavailable_error", code="server_shutting_down"
    )


def late_error(exc: BaseException, prompt_param: str) -> APIError:
    """An error after admission (the response may be streaming already)."""
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return APIError(504, "request timed out", "timeout_error", code="request_timeout")
    return admission_error(exc, prompt_param)


async def collect(gen: Generation, request: Request, prompt_param: str) -> list[RequestOutput] | None:
    """Final outputs in choice order, or None if the client went away first (its requests aborted)."""
    finals: dict[int, RequestOutput] = {}

    async def run():
        async for index, out in gen.outputs():
            if out.finished:
                finals[index] = out

    work = asyncio.ensure_future(run())
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        gen.close()
        client_gone = not work.done()
        work.cancel()
    if client_gone:
        return None
    if work.exception() is not None:
        raise late_error(work.exception(), prompt_param)
    return [finals[i] for i in range(len(finals))]


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def sse_stream(
    fmt,
    meta,
    gen: Generation,
    prompts: list[list[int]],
    options: StreamOptions,
    texts: TokenTexts | None,
) -> AsyncIterator[bytes]:
    """Chunks: the opening ones, then per finished block the text it made final (the last one of
    each choice with its finish_reason), the usage chunk if asked, then [DONE]. With
    continuous_usage_stats every chunk carries the usage so far (all prompts, the tokens made final).
    With `texts` (logprobs asked) a chunk carries the logprobs of the tokens whose text it adds."""
    exclude = None if options.include_usage or options.continuous_usage_stats else {"usage"}
    cursors = {i: LogprobCursor(texts) for i in range(gen.num_requests)} if texts is not None else {}
    sent: dict[int, str] = {}
    latest: dict[int, RequestOutput] = {}
    finals: dict[int, RequestOutput] = {}

    def event(chunk) -> bytes:
        if options.continuous_usage_stats:
            chunk.usage = usage(prompts, list(latest.values()))
        return _event(chunk.model_dump_json(exclude=exclude))

    try:
        for chunk in fmt.opening(meta, gen.num_requests):
            yield event(chunk)
        async for index, out in gen.outputs():
            before = sent.get(index, "")
            # Engine texts only grow: a block's text holds back partial UTF-8 and stop-string prefixes.
            delta = out.text[len(before) :]
            sent[index] = out.text
            latest[index] = out
            entries = cursors[index].take(out) if cursors else []
            if delta or out.finished or entries:
                finish = out.finish_reason if out.finished else None
                logprobs = fmt.logprobs(texts, entries) if cursors else None
                yield event(fmt.chunk(meta, index, delta, finish, logprobs))
            if out.finished:
                finals[index] = out
        if options.include_usage:
            use = usage(prompts, [finals[i] for i in range(len(finals))])
            yield _event(fmt.usage_chunk(meta, use).model_dump_json())
    except Exception as exc:
        err = late_error(exc, fmt.prompt_param)
        yield _event(json.dumps(err.body()))
    finally:
        gen.close()
    yield DONE


def _event(data: str) -> bytes:
    return f"data: {data}\n\n".encode()


class EventStreamResponse(StreamingResponse):
    """text/event-stream that aborts its engine requests however the response ends, even when the
    client leaves before the body iterator ever starts."""

    def __init__(self, content: AsyncIterator[bytes], on_close):
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()
