"""Hand-off types between the engine's stages.

Data flow of one request:

    HTTP JSON -> server protocol model -> (prompt token ids, SamplingParams)
      -> AsyncEngine.generate / LLM.generate -> Request (WAITING)
      -> Scheduler.schedule() -> SchedulerOutput: which requests take a denoising step now, and
         which of them need a forward (a request whose canvas did not change since its last forward
         reuses that output, RADD-style, and takes no row)
      -> ModelRunner.execute(): one packed batch (a conditional row per request, plus an
         unconditional row for CFG) -> model forward -> logits of the masked positions of each
         active block -> sampler (candidate token + confidence) -> unmasking policy (which
         positions commit) -> StepOutput
      -> Scheduler.update(): commits tokens, closes blocks, finishes requests -> RequestOutput for
         each request that finished a block or finished
      -> LLM returns the final outputs; AsyncEngine streams one RequestOutput per finished block.

The engine loop's step() is exactly: schedule, execute, update.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SchedulerOutput:
    """The requests taking a step now; `forward` ones need a model row, `reuse` ones do not."""

    forward: list = field(default_factory=list)  # list[Request]
    reuse: list = field(default_factory=list)  # list[Request]

    @property
    def is_empty(self) -> bool:
        return not self.forward and not self.reuse


@dataclass
class Commit:
    """Positions (absolute in the canvas) a request commits this step, with their tokens."""

    positions: list[int]
    tokens: list[int]
    # With SamplingParams.logprobs: per token, (its logprob, [(token, logprob)] of the best alternatives).
    logprobs: list[tuple[float, list[tuple[int, float]]]] | None = None


@dataclass
class StepOutput:
    commits: dict[str, Commit]  # request_id -> what it commits this step
    num_rows: int  # sequences in the forward batch (CFG counts two per request)
    num_tokens: int  # positions in the forward batch


@dataclass
class RequestOutput:
    """What a caller sees: cumulative text and ids so far; `finished` on the last one."""

    request_id: str
    prompt_token_ids: list[int]
    token_ids: list[int]  # generated ids, cut before the first EOS/EoT or stop string
    text: str  # generated text that is final (safe to stream)
    finished: bool
    finish_reason: str | None  # "stop" | "length" | "abort" once finished
    num_forward_passes: int  # rows this request took in forward passes (CFG counts one per step)
    num_steps: int  # denoising steps taken, forwards and reuses together
    prompt: str | None = None
    # With SamplingParams.logprobs, one entry per token_ids entry: (logprob, [(token, logprob)] of the
    # best alternatives), under the forward that committed the token (guided, un-tempered).
    logprobs: list[tuple[float, list[tuple[int, float]]]] | None = None


@dataclass
class StepStats:
    """One engine step, for metrics and benchmarks."""

    num_rows: int
    num_tokens: int
    num_requests: int
    num_reused: int
    duration_s: float
