"""AsyncEngine: the engine loop on a background thread, streams of outputs for asyncio callers.

The loop thread owns the Engine: it alone calls add_request, abort and step, so the scheduler needs
no locks. Callers hand it work through a thread-safe inbox and get outputs back on their event loop
(`loop.call_soon_threadsafe`), so a forward pass never blocks the event loop. One RequestOutput
arrives per finished block; the last one has `finished=True`.

Admission: a request is refused (QueueFullError) when `max_waiting` requests would already wait for a
running slot; requests still in the inbox count against the free slots, not as waiting.
Failures: a failed step fails the requests in it, then the engine runs its warm-up request (one
token). If that steps, the failure belonged to those requests and the loop keeps serving (so no
request can bring the server down); if not, the engine is broken: `failure` is set, as it is when an
exception ends the loop thread, every open stream gets EngineDeadError and no more work is taken (the
server answers /health 503 and exits so that it is restarted).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator

from engine.engine import Engine, EngineConfig
from engine.outputs import RequestOutput
from engine.sampling_params import SamplingParams

log = logging.getLogger("dllm.engine")


class QueueFullError(RuntimeError):
    """Too many requests are waiting; the caller should retry later."""


class EngineDeadError(RuntimeError):
    """The engine loop stopped: shutdown, or (`failed`) an error it could not recover from."""

    def __init__(self, message: str, failed: bool = False):
        super().__init__(message)
        self.failed = failed


class AsyncEngine:
    def __init__(self, engine: Engine, max_waiting: int = 256):
        self.engine = engine
        self.max_waiting = max_waiting
        self.max_num_seqs = engine.config.max_num_seqs
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._lock = threading.Lock()
        self._stopping = False
        self._draining = False
        self._thread: threading.Thread | None = None
        self.failure: str | None = None  # set once, by the loop thread, on a fatal error
        # Guarded by _lock: the scheduler's counts as of the last step, and adds still in the inbox.
        self.num_running = 0
        self.num_waiting = 0
        self._num_pending_adds = 0

    @classmethod
    def from_config(cls, config: EngineConfig, max_waiting: int = 256) -> AsyncEngine:
        return cls(Engine(config), max_waiting=max_waiting)

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def is_running(self) -> bool:
        return (
            self._thread is not None
            and self._thread.is_alive()
            and not self._stopping
            and not self._draining
            and self.failure is None
        )

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="dllm-engine", daemon=True)
            self._thread.start()

    def validate(self, prompt_ids: list[int], params: SamplingParams | None) -> SamplingParams:
        """Resolve and check a request without queueing it; raises ValueError with a user message."""
        return self.engine.validate(prompt_ids, params)

    async def generate(
        self, prompt_ids: list[int], params: SamplingParams | None, request_id: str, prompt: str | None = None
    ) -> AsyncIterator[RequestOutput]:
        """Queue a request and yield its outputs; leaving the iteration early aborts it."""
        if not self.is_running:
            raise EngineDeadError(self.failure or "the engine is not running", self.failure is not None)
        self.validate(prompt_ids, params)
        with self._lock:
            # Requests that would wait for a running slot: everything taken, beyond the slots.
            taken = self.num_running + self.num_waiting + self._num_pending_adds
            if taken - self.max_num_seqs >= self.max_waiting:
                raise QueueFullError(f"server busy: {self.max_waiting} requests already waiting")
            if request_id in self._streams:
                raise ValueError(f"request id {request_id!r} is already in use")
            stream: asyncio.Queue = asyncio.Queue()
            self._streams[request_id] = (asyncio.get_running_loop(), stream)
            self._num_pending_adds += 1
            self._inbox.put(("add", request_id, prompt_ids, params, prompt))
        self._wake.set()
        if self.failure is not None or self._stopping:  # stopped after the check above: fail it here
            stream.put_nowait(
                EngineDeadError(self.failure or "the engine is not running", self.failure is not None)
            )
        finished = False
        try:
            while True:
                item = await stream.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            if not finished:
                self.abort(request_id)
            with self._lock:
                self._streams.pop(request_id, None)

    def abort(self, request_id: str) -> None:
        self._inbox.put(("abort", request_id))
        self._wake.set()

    async def shutdown(self, drain_timeout: float = 0.0, timeout: float = 10.0) -> None:
        """Stop taking work, let in-flight requests finish for up to `drain_timeout` seconds, then
        fail what is left at once (its callers get EngineDeadError, even while a long step is still
        running), stop the loop and wait up to `timeout` seconds for its current step to end."""
        self._draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        while self._streams and loop.time() < deadline:
            await asyncio.sleep(0.05)
        self._stopping = True
        self._wake.set()
        self._fail_streams(EngineDeadError("the server is shutting down"))
        if self._thread is not None and self._thread.is_alive():
            await loop.run_in_executor(None, self._thread.join, timeout)

    # -- loop thread ------------------------------------------------------------------------------
    def _deliver(self, request_id: str, item) -> None:
        with self._lock:
            target = self._streams.get(request_id)
        if target is not None:
            loop, stream = target
            try:
                loop.call_soon_threadsafe(stream.put_nowait, item)
            except RuntimeError:  # the caller's loop is closed
                pass

    def _fail_streams(self, exc: BaseException) -> None:
        """Hand `exc` to every open stream (from any thread)."""
        with self._lock:
            request_ids = list(self._streams)
        for rid in request_ids:
            self._deliver(rid, exc)

    def _drain_inbox(self) -> None:
        num_adds = 0
        while True:
            try:
                msg = self._inbox.get_nowait()
            except queue.Empty:
                break
            if msg[0] == "add":
                num_adds += 1
                _, rid, ids, params, prompt = msg
                try:
                    self.engine.add_request(rid, ids, params, prompt=prompt)
                except Exception as exc:  # the request fails alone; the loop keeps serving
                    self._deliver(rid, exc)
            else:
                self.engine.abort(msg[1])
        self._count(num_adds)

    def _count(self, num_adds_taken: int = 0) -> None:
        """Publish the scheduler's counts; `num_adds_taken` inbox adds moved into it meanwhile."""
        sched = self.engine.scheduler
        with self._lock:
            self.num_running, self.num_waiting = len(sched.running), len(sched.waiting)
            self._num_pending_adds -= num_adds_taken

    def _loop(self) -> None:
        try:
            self._serve()
            dead = EngineDeadError("the server is shutting down")
        except Exception as exc:
            log.exception("engine loop failed")
            self.failure = self.failure or f"the engine loop crashed: {type(exc).__name__}: {exc}"
            dead = EngineDeadError(self.failure, failed=True)
        self._fail_all(dead)
        self._fail_streams(dead)  # also those whose add is still in the inbox
        with self._lock:
            self.num_running = self.num_waiting = 0

    def _serve(self) -> None:
        """Schedule-execute-update until stopped; raises on a fatal error."""
        while not self._stopping:
            self._drain_inbox()
            if not self.engine.has_unfinished():
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            try:
                outputs = self.engine.step()
            except Exception as exc:  # fail the batch; keep serving if the engine itself still steps
                log.exception("engine step failed; aborting the requests in it")
                # Queued requests fail too: the warm-up below steps whatever is left in the engine.
                self._fail_all(RuntimeError(f"engine step failed: {exc}"))
                try:
                    self.engine.warm_up()
                except ValueError as probe:
                    self.failure = f"a step failed ({exc}), and so does the warm-up request: {probe}"
                    raise
                self._count()
                continue
            self._count()  # after schedule(): admitted requests no longer count as waiting
            for out in outputs:
                self._deliver(out.request_id, out)

    def _fail_all(self, exc: BaseException) -> None:
        sched = self.engine.scheduler
        for req in list(sched.running) + list(sched.waiting):
            self.engine.abort(req.request_id)
            self._deliver(req.request_id, exc)
