"""A request's state through the engine: its canvas, block/step position and status."""

from __future__ import annotations

import enum

from engine.sampling_params import SamplingParams


class RequestStatus(enum.IntEnum):
    """Ordered: every status from FINISHED_STOPPED on is final."""

    WAITING = 0
    RUNNING = 1
    FINISHED_STOPPED = 2
    FINISHED_LENGTH = 3
    FINISHED_ABORTED = 4

    @property
    def is_finished(self) -> bool:
        return self >= RequestStatus.FINISHED_STOPPED

    @property
    def finish_reason(self) -> str | None:
        return {2: "stop", 3: "length", 4: "abort"}.get(int(self))


class Request:
    """Canvas = prompt ids followed by max_tokens mask ids, denoised block by block.

    `params` must be resolved (every field set). Per-block commit counts for the exact mode follow
    LLaDA's schedule: with n masks and S steps, each step commits floor(n / S) and the first n mod S
    steps one more.
    """

    def __init__(
        self,
        request_id: str,
        prompt_ids: list[int],
        params: SamplingParams,
        mask_id: int,
        prompt: str | None = None,
        arrival: float = 0.0,
    ):
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_ids = list(prompt_ids)
        self.params = params
        self.mask_id = mask_id
        self.arrival = arrival
        self.status = RequestStatus.WAITING
        self.prompt_len = len(prompt_ids)
        gen = params.max_tokens
        # A host list: the step builds its batch from slices of it and commits into it, with no
        # per-request tensor work (one tensor for the whole batch is made from the lists).
        self.canvas: list[int] = self.prompt_ids + [mask_id] * gen
        self.block = 0
        self.step_in_block = 0
        self.num_steps = 0
        self.num_forward_passes = 0
        self.canvas_version = 0  # bumped whenever tokens commit
        self.reuse_logits = None  # (canvas_version, guided logits) kept for RADD-style reuse
        # Approximate caches: pages of the engine's K/V pool, one list per row (cond, uncond), and the
        # block whose entry refresh filled them (-1: none yet).
        self.kv_pages: list[list[int]] = []
        self.kv_block = -1
        self.seed = 0  # keys this request's random draws (with step and position); set on admission
        self.final_len = gen  # generated length that counts (cut at EOS/EoT/stop)
        self.finished_text: str | None = None
        self._plan = self._block_plan()
        self.masked = self._block_masks()  # masked positions of the active block, ascending
        self.token_logprobs: dict[int, tuple] = {}  # canvas position -> Commit.logprobs entry

    # -- geometry ---------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return self.params.num_blocks

    def block_bounds(self, block: int | None = None) -> tuple[int, int]:
        """Absolute [start, end) of a block in the canvas."""
        b = self.block if block is None else block
        start = self.prompt_len + b * self.params.block_length
        return start, min(start + self.params.block_length, self.prompt_len + self.params.max_tokens)

    def masked_positions(self) -> list[int]:
        """Absolute positions still masked in the active block, ascending (kept up to date on the
        host by `commit`, so no tensor is scanned per step)."""
        return self.masked

    def _block_masks(self) -> list[int]:
        start, end = self.block_bounds()
        return [start + i for i, t in enumerate(self.canvas[start:end]) if t == self.mask_id]

    def _block_plan(self) -> tuple[int, int]:
        """(tokens, steps) of the active block."""
        start, end = self.block_bounds()
        return max(end - start, 0), self.params.steps_for_block(self.block)

    @property
    def block_steps(self) -> int:
        return self._plan[1]

    @property
    def block_tokens(self) -> int:
        """Positions of the active block."""
        return self._plan[0]

    def commits_at(self, step: int) -> int:
        """Tokens the exact schedule commits at `step` of the active block (computed, not stored:
        steps may be many)."""
        n, steps = self._plan
        if step >= steps:
            return 0
        base, extra = divmod(n, steps)
        return base + (1 if step < extra else 0)

    def num_to_commit(self) -> int:
        """Tokens the exact schedule commits at this step."""
        return self.commits_at(self.step_in_block)

    def scheduled_commits(self) -> int:
        """Tokens the exact mode commits now: the schedule's count, capped by the masks left, and
        every mask left at the block's last scheduled step (so a block always closes on time)."""
        n = len(self.masked)
        if self.step_in_block >= self._plan[1] - 1:
            return n
        return min(self.commits_at(self.step_in_block), n)

    @property
    def canvas_len(self) -> int:
        return self.prompt_len + self.params.max_tokens

    def query_range(self) -> tuple[int, int]:
        """Canvas positions this step's forward computes: the whole canvas without a cache or on
        entering a block (the refresh that fills the cache); then the active block and everything
        after it (prefix cache) or the active block alone (dual cache)."""
        if not self.params.is_cached or self.kv_block != self.block:
            return 0, self.canvas_len
        start, end = self.block_bounds()
        return (start, self.canvas_len) if self.params.cache == "prefix" else (start, end)

    # -- state changes ------------------------------------------------------------------------
    def commit(self, positions: list[int], tokens: list[int], logprobs: list | None = None) -> None:
        """Write committed tokens (positions: masked positions of the active block), and their
        log-probabilities when the request asked for them."""
        if logprobs is not None:
            self.token_logprobs.update(zip(positions, logprobs, strict=True))
        if positions:
            for p, t in zip(positions, tokens, strict=True):
                self.canvas[p] = t
            if len(positions) == 1:  # the common case: one token per step
                self.masked.remove(positions[0])
            else:
                done = set(positions)
                self.masked = [p for p in self.masked if p not in done]
            self.canvas_version += 1
        self.step_in_block += 1
        self.num_steps += 1

    def is_block_done(self) -> bool:
        return not self.masked

    def advance_block(self) -> None:
        self.block += 1
        self.step_in_block = 0
        self._plan = self._block_plan()
        self.masked = self._block_masks()

    def generated_ids(self) -> list[int]:
        """Committed ids of the finished blocks, up to the cut."""
        end = min(self.block_bounds(self.block)[0] - self.prompt_len, self.final_len)
        return self.canvas[self.prompt_len : self.prompt_len + end]

    @property
    def is_finished(self) -> bool:
        return self.status >= RequestStatus.FINISHED_STOPPED  # RequestStatus.is_finished, inlined
