"""Step-level scheduler: which requests take the next denoising step, and what their step did.

Every running request takes one denoising step per engine step (diffusion has no prefill/decode
split: only counts). Requests join between steps, up to `max_num_seqs` running and a budget of
`max_num_batched_tokens` canvas positions per forward (CFG rows count twice); they leave when they
finish or are aborted. Pure CPU bookkeeping: testable with hand-made StepOutputs and no model.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import torch

from engine.detokenize import find_stop, streamable
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
    ):
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.stop_token_ids = torch.tensor(stop_token_ids, dtype=torch.int64)
        self.detokenize = detokenize
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []

    def check_fits(self, prompt_len: int, params: SamplingParams) -> None:
        """ValueError when one such request alone would exceed the per-step position budget."""
        cost = positions_per_step(prompt_len, params)
        if cost > self.max_num_batched_tokens:
            rows = 2 if params.cfg_scale > 0 else 1
            raise ValueError(
                f"the request needs {cost} positions per step ({rows} row(s) of prompt + max_tokens), "
                f"more than max_num_batched_tokens ({self.max_num_batched_tokens})"
            )

    def add(self, request: Request) -> None:
        self.check_fits(request.prompt_len, request.params)
        self.waiting.append(request)

    def abort(self, request_id: str) -> RequestOutput | None:
        for queue in (self.running, self.waiting):
            for req in list(queue):
                if req.request_id == request_id:
                    queue.remove(req)
                    req.status = RequestStatus.FINISHED_ABORTED
                    return self._output(req)
        return None

    @property
    def num_unfinished(self) -> int:
        return len(self.waiting) + len(self.running)

    def schedule(self) -> SchedulerOutput:
        """Admit waiting requests in arrival order while they fit, then step every running one."""
        used = sum(_cost(r) for r in self.running)
        while self.waiting and len(self.running) < self.max_num_seqs:
            if used + _cost(self.waiting[0]) > self.max_num_batched_tokens:
                break
            req = self.waiting.popleft()
            req.status = RequestStatus.RUNNING
            self.running.append(req)
            used += _cost(req)
        out = SchedulerOutput()
        for req in self.running:
            reusable = req.cache is not None and req.cache[0] == req.canvas_version
            (out.reuse if reusable else out.forward).append(req)
        return out

    def update(self, sched: SchedulerOutput, step: StepOutput) -> list[RequestOutput]:
        """Commit each request's tokens; return an output for every request that closed a block."""
        outputs = []
        for req in sched.forward + sched.reuse:
            if req.is_finished:  # aborted while its step ran
                continue
            commit = step.commits[req.request_id]
            req.commit(commit.positions, commit.tokens)
            if req.is_block_done():
                self._close_block(req)
                outputs.append(self._output(req))
        self.running = [r for r in self.running if not r.is_finished]
        return outputs

    def _close_block(self, req: Request) -> None:
        start, end = req.block_bounds()
        # An earlier block already stopped it (EOS/EoT or a stop string).
        stopped = req.final_len < req.params.max_tokens or req.finished_text is not None
        if not stopped and not req.params.ignore_eos:
            block = req.canvas[start:end]
            hits = torch.isin(block, self.stop_token_ids).nonzero()
            if hits.numel():
                req.final_len = start - req.prompt_len + int(hits[0])
                stopped = True
        if req.params.stop and self.detokenize is not None and req.finished_text is None:
            text = self.detokenize(req.canvas[req.prompt_len : end].tolist()[: req.final_len])
            cut = find_stop(text, req.params.stop)
            if cut is not None:
                req.finished_text = text[:cut]
                stopped = True
        last = req.block + 1 >= req.num_blocks
        if stopped and (req.params.early_stop or last):
            req.status = RequestStatus.FINISHED_STOPPED
        elif last:
            req.status = RequestStatus.FINISHED_LENGTH
        if req.is_finished:
            if req.final_len < req.params.max_tokens and req.params.early_stop:
                # Every later position is EOS: the blocks after the stop are not run.
                req.canvas[req.prompt_len + req.final_len + 1 :] = int(self.stop_token_ids[0])
            req.cache = None
        req.advance_block()

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
        )


def positions_per_step(prompt_len: int, params: SamplingParams) -> int:
    """Canvas positions a request puts in every forward: prompt + max_tokens, twice under CFG."""
    rows = 2 if params.cfg_scale > 0 else 1
    return rows * (prompt_len + params.max_tokens)


def _cost(req: Request) -> int:
    return positions_per_step(req.prompt_len, req.params)
