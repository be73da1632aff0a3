"""The synchronous engine core that LLM (offline) and AsyncEngine (server) both drive.

`step()` is schedule, execute, update. Requests are validated and their parameters resolved
against the checkpoint's defaults when they are added, so a bad request fails alone, at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.model_runner import ModelRunner
from engine.outputs import RequestOutput, StepStats
from engine.request import Request
from engine.sampling_params import SamplingParams
from engine.scheduler import Scheduler
from kernels.ops import get_ops
from models.registry import DEMO_MODEL_DIR, LoadedModel, load_model


@dataclass(frozen=True)
class EngineConfig:
    model: str | Path | None = None  # checkpoint directory; None: the shipped demo model
    dtype: str = "auto"  # auto | bfloat16 | float16 | float32
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    kernels: str = "auto"  # auto (triton on CUDA, torch on CPU) | triton | torch
    max_num_seqs: int = 32  # requests denoising together
    max_num_batched_tokens: int = 65536  # canvas positions per forward (CFG rows count twice)

    def __post_init__(self):
        for name in ("max_num_seqs", "max_num_batched_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")


class Engine:
    def __init__(self, config: EngineConfig, loaded: LoadedModel | None = None):
        """`loaded` skips loading `config.model` (benchmarks build random full-size models)."""
        self.config = config
        self.loaded = loaded or load_model(
            config.model or DEMO_MODEL_DIR, dtype=config.dtype, device=config.device
        )
        self.tokenizer = self.loaded.tokenizer
        self.model_config = self.loaded.config
        self.max_model_len = self.model_config.max_sequence_length
        self.ops = get_ops(config.kernels, self.loaded.device)
        self.runner = ModelRunner(self.loaded, self.ops)
        detok = None
        if self.tokenizer is not None:
            detok = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        self.scheduler = Scheduler(
            config.max_num_seqs, config.max_num_batched_tokens, self.loaded.stop_token_ids, detok
        )
        self.step_listeners: list[Callable[[StepStats], None]] = []

    @property
    def default_params(self) -> dict:
        """Sampling defaults from the checkpoint's generation_config.json."""
        return self.loaded.generation_defaults

    def validate(self, prompt_ids: list[int], params: SamplingParams | None) -> SamplingParams:
        """Resolve params against the checkpoint defaults and check the request fits; ValueError if not."""
        resolved = (params or SamplingParams()).resolve(self.default_params)
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        total = len(prompt_ids) + resolved.max_tokens
        if total > self.max_model_len:
            raise ValueError(
                f"prompt ({len(prompt_ids)} tokens) plus max_tokens ({resolved.max_tokens}) is "
                f"{total}, more than the model's context of {self.max_model_len} tokens"
            )
        self.scheduler.check_fits(len(prompt_ids), resolved)
        vocab = self.model_config.embedding_size
        if any((not isinstance(t, int)) or t < 0 or t >= vocab for t in prompt_ids):
            raise ValueError(f"prompt token ids must be integers in [0, {vocab})")
        if self.model_config.mask_token_id in prompt_ids:
            raise ValueError("the prompt contains the mask token id")
        return resolved

    def add_request(
        self,
        request_id: str,
        prompt_ids: list[int],
        params: SamplingParams | None = None,
        prompt: str | None = None,
    ) -> Request:
        resolved = self.validate(prompt_ids, params)
        req = Request(
            request_id,
            prompt_ids,
            resolved,
            self.model_config.mask_token_id,
            prompt=prompt,
            arrival=time.monotonic(),
        )
        self.scheduler.add(req)
        self.runner.init_request(req)
        return req

    def abort(self, request_id: str) -> RequestOutput | None:
        return self.scheduler.abort(request_id)

    def has_unfinished(self) -> bool:
        return self.scheduler.num_unfinished > 0

    def step(self) -> list[RequestOutput]:
        start = time.perf_counter()
        sched = self.scheduler.schedule()
        if sched.is_empty:
            return []
        step = self.runner.execute(sched)
        outputs = self.scheduler.update(sched, step)
        stats = StepStats(
            num_rows=step.num_rows,
            num_tokens=step.num_tokens,
            num_requests=len(sched.forward) + len(sched.reuse),
            num_reused=len(sched.reuse),
            duration_s=time.perf_counter() - start,
        )
        for listener in self.step_listeners:
            listener(stats)
        return outputs
