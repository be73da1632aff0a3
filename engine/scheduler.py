"""Step-level scheduler: which requests take the next denoising step, and what their step did.

Every running request takes one denoising step per engine step (diffusion has no prefill/decode
split: only counts). Requests join between steps, up to `max_num_seqs` running and a budget of
`max_num_batched_tokens` canvas positions per forward (CFG rows count twice); they leave when they
finish or are aborted. A request with an approximate cache also takes its K/V pages on admission
(all it will need: prompt + max_tokens positions per row) and waits in the queue while they are not
free; every way out of `running` (finish, abort) gives them back. Pure CPU bookkeeping: testable with
hand-made StepOutputs and no model.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from engine.detokenize import find_stop, streamable
from engine.kv_cache import PAGE_SIZE, PageAllocator, pages_for
from engine.outputs import RequestOutput, SchedulerOutput, StepOutput
from engine.request import Request, RequestStatus
from engine.sampling_params import SamplingParams


class Scheduler:
    def __init__(
        self,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        stop_token_ids: tuple[int, ...],
        detokenize: Callable[[list[int]], str] | None = None,
        kv_pages: PageAllocator | None = None,
        page_size: int = PAGE_SIZE,
    ):
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.stop_token_ids = tuple(stop_token_ids)  # the first is EOS, the early-stop filler
        self.detokenize = detokenize
        self.kv_pages = kv_pages  # None: no K/V pool, only uncached requests are served
        self.page_size = page_size
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []

    def check_fits(self, prompt_len: int, params: SamplingParams) -> None:
        """ValueError when one such request alone would exceed the per-step position budget, or
        could never get its K/V pages."""
        cost = positions_per_step(prompt_len, params)
        rows = params.num_rows
        if cost > self.max_num_batched_tokens:
            raise ValueError(
                f"the request needs {cost} positions per step ({rows} row(s) of prompt + max_tokens), "
                f"more than max_num_batched_tokens ({self.max_num_batched_tokens})"
            )
        if params.is_cached:
            if self.kv_pages is None or self.kv_pages.num_pages == 0:
                raise ValueError(
                    f"cache {params.cache!r} needs a K/V cache pool and this engine has none "
                    "(kv_cache_memory is 0): use cache 'none'"
                )
            need = self._pages_needed(prompt_len, params)
            if need > self.kv_pages.num_pages:
                raise ValueError(
                    f"cache {params.cache!r}: the request needs {need} K/V cache pages ({rows} row(s) of "
                    f"prompt + max_tokens = {prompt_len + params.max_tokens} positions, "
                    f"{self.page_size} per page), more than the pool's {self.kv_pages.num_pages}"
                )

    def _pages_needed(self, prompt_len: int, params: SamplingParams) -> int:
        if not params.is_cached:
            return 0
        return params.num_rows * pages_for(prompt_len + params.max_tokens, self.page_size)

    def add(self, request: Request) -> None:
        self.check_fits(request.prompt_len, request.params)
        self.waiting.append(request)

    def abort(self, request_id: str) -> RequestOutput | None:
        for queue in (self.running, self.waiting):
            for req in list(queue):
                if req.request_id == request_id:
                    queue.remove(req)
                    req.status = RequestStatus.FINISHED_ABORTED
                    self._release(req)
                    return self._output(req)
        return None

    def _release(self, req: Request) -> None:
        """Give back what a request holds beyond its own fields: its K/V pages and reuse logits."""
        for pages in req.kv_pages:
            self.kv_pages.free(pages)
        req.kv_pages = []
        req.reuse_logits = None

    @property
    def num_unfinished(self) -> int:
        return len(self.waiting) + len(self.running)

    def schedule(self) -> SchedulerOutput:
        """Admit waiting requests in arrival order while they fit (positions per step, and K/V pages
        for cached ones), then step every running one."""
        used = sum(_cost(r) for r in self.running) if self.waiting else 0  # only admission reads it
        while self.waiting and len(self.running) < self.max_num_seqs:
            head = self.waiting[0]
            if used + _cost(head) > self.max_num_batched_tokens:
                break
            need = self._pages_needed(head.prompt_len, head.params)
            if need and not self.kv_pages.can_allocate(need):
                break
            req = self.waiting.popleft()
            if need:
                per_row = need // req.params.num_rows
                req.kv_pages = [self.kv_pages.allocate(per_row) for _ in range(req.params.num_rows)]
            req.status = RequestStatus.RUNNING
            self.running.append(req)
            used += _cost(req)
        out = SchedulerOutput()
        for req in self.running:
            reusable = req.reuse_logits is not None and req.reuse_logits[0] == req.canvas_version
            (out.reuse if reusable else out.forward).append(req)
        return out

    def update(self, sched: SchedulerOutput, step: StepOutput) -> list[RequestOutput]:
        """Commit each request's tokens; return an output for every request that closed a block."""
        outputs, finished = [], []
        for req in sched.forward + sched.reuse:
            if req.is_finished:  # aborted while its step ran (abort took it out of `running`)
                continue
            commit = step.commits[req.request_id]
            req.commit(commit.positions, commit.tokens, commit.logprobs)
            if req.is_block_done():
                self._close_block(req)
                outputs.append(self._output(req))
                if req.is_finished:
                    finished.append(req)
        if finished:
            for req in finished:
                self._release(req)
            self.running = [r for r in self.running if not r.is_finished]
        return outputs

    def _close_block(self, req: Request) -> None:
        start, end = req.block_bounds()
        # An earlier block already stopped it (EOS/EoT or a stop string).
        stopped = req.final_len < req.params.max_tokens or req.finished_text is not None
        if not stopped and not req.params.ignore_eos:
            hit = next((i for i, t in enumerate(req.canvas[start:end]) if t in self.stop_token_ids), None)
            if hit is not None:
                req.final_len = start - req.prompt_len + hit
                stopped = True
        if req.params.stop and self.detokenize is not None and req.finished_text is None:
            ids = req.canvas[req.prompt_len : end][: req.final_len]
            text = self.detokenize(ids)
            cut = find_stop(text, req.params.stop)
            if cut is not None:
                req.finished_text = text[:cut]
                req.final_len = self._tokens_within(ids, cut)
                stopped = True
        last = req.block + 1 >= req.num_blocks
        if stopped and (req.params.early_stop or last):
            req.status = RequestStatus.FINISHED_STOPPED
        elif last:
            req.status = RequestStatus.FINISHED_LENGTH
        if req.is_finished:
            if req.final_len < req.params.max_tokens and req.params.early_stop:
                # Every later position is EOS: the blocks after the stop are not run.
                tail = req.prompt_len + req.final_len + 1
                req.canvas[tail:] = [self.stop_token_ids[0]] * (len(req.canvas) - tail)
        req.advance_block()

    def _tokens_within(self, ids: list[int], num_chars: int) -> int:
        """The most leading tokens whose text fits in `num_chars` characters (binary search over
        prefixes), so token_ids end where a stop string cut the text."""
        lo, hi = 0, len(ids)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if len(self.detokenize(ids[:mid])) <= num_chars:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _output(self, req: Request) -> RequestOutput:
        ids = req.generated_ids()
        if req.finished_text is not None:
            text = req.finished_text
        elif self.detokenize is None:
            text = ""
        else:
            text = self.detokenize(ids)
            if not req.is_finished:
                text = streamable(text, req.params.stop)
        return RequestOutput(
            request_id=req.request_id,
            prompt=req.prompt,
            prompt_token_ids=req.prompt_ids,
            token_ids=ids,
            text=text,
            finished=req.is_finished,
            finish_reason=req.status.finish_reason,
            num_forward_passes=req.num_forward_passes,
            num_steps=req.num_steps,
            logprobs=None
            if req.params.logprobs is None
            else [req.token_logprobs.get(req.prompt_len + i) for i in range(len(ids))],
        )


def positions_per_step(prompt_len: int, params: SamplingParams) -> int:
    """Canvas positions a request puts in every forward: prompt + max_tokens, twice under CFG."""
    return params.num_rows * (prompt_len + params.max_tokens)


def _cost(req: Request) -> int:
    return positions_per_step(req.prompt_len, req.params)
