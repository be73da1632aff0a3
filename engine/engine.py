"""The synchronous engine core that LLM (offline) and AsyncEngine (server) both drive.

`step()` is schedule, execute, update. Requests are validated and their parameters resolved
against the checkpoint's defaults when they are added, so a bad request fails alone, at once.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.cuda_graphs import resolve_mode as resolve_graph_mode
from engine.kv_cache import KVCache, kv_budget_bytes
from engine.model_runner import ModelRunner
from engine.outputs import RequestOutput, StepStats
from engine.request import Request
from engine.sampling_params import CACHE_MODES, SamplingParams
from engine.scheduler import Scheduler
from kernels.ops import get_ops
from models.registry import DEMO_MODEL_DIR, LoadedModel, load_model, resolve_device

log = logging.getLogger("dllm.engine")


@dataclass(frozen=True)
class EngineConfig:
    model: str | Path | None = None  # checkpoint directory; None: the shipped demo model
    tokenizer: str | Path | None = None  # tokenizer directory for releases that ship none (RADD, SMDM)
    smdm_size: str | None = None  # Diff_LLaMA size of a bare SMDM file (None: from its name)
    dtype: str = "auto"  # auto | bfloat16 | float16 | float32
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    kernels: str = "auto"  # auto (triton on CUDA, torch on CPU) | triton | torch
    max_num_seqs: int = 32  # requests denoising together
    # Canvas positions per forward (CFG rows count twice); None: `default_max_num_batched_tokens`.
    max_num_batched_tokens: int | None = None
    cache: str | None = None  # default cache mode of requests that set none (None: checkpoint, "none")
    kv_cache_memory: float | None = None  # K/V pool GiB (None: half the free CUDA memory; 1 on CPU)
    cuda_graphs: str = "auto"  # auto (on with CUDA and Triton kernels) | on | off: engine/cuda_graphs.py

    def __post_init__(self):
        for name in ("max_num_seqs", "max_num_batched_tokens"):
            value = getattr(self, name)
            if value is None and name == "max_num_batched_tokens":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if self.cache is not None and self.cache not in CACHE_MODES:
            raise ValueError(f"cache must be one of {', '.join(CACHE_MODES)}; got {self.cache!r}")
        _check_device(self.device)
        # A bad mode, or "on" where graphs cannot run, is refused before the model loads.
        device = resolve_device(self.device)
        resolve_graph_mode(self.cuda_graphs, device, get_ops(self.kernels, device).name)
        memory = self.kv_cache_memory
        if memory is not None and (
            isinstance(memory, bool)
            or not isinstance(memory, (int, float))
            or not math.isfinite(memory)
            or memory < 0
        ):
            raise ValueError(f"kv_cache_memory must be a number of GiB >= 0; got {memory!r}")


def default_max_num_batched_tokens(max_model_len: int) -> int:
    """Room for one request of the model's whole context with CFG (two rows), and at least 65536
    positions so short-context models still batch many requests: 65536 for LLaDA-8B (4096),
    262144 for UltraLLaDA (131072)."""
    return max(65536, 2 * max_model_len)


def _check_device(device: str) -> None:
    """A device torch knows and this host has (CUDA ones: built with CUDA, index below the count)."""
    if device == "auto":
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N; got {device!r}") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"device {device!r}: CUDA is not available (no GPU, or torch built without CUDA)"
            )
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {device!r}: this host has {count} CUDA device(s)")


class Engine:
    def __init__(self, config: EngineConfig, loaded: LoadedModel | None = None):
        """`loaded` skips loading `config.model` (benchmarks build random full-size models)."""
        self.config = config
        self.loaded = loaded or load_model(
            config.model or DEMO_MODEL_DIR,
            dtype=config.dtype,
            device=config.device,
            tokenizer=config.tokenizer,
            smdm_size=config.smdm_size,
        )
        self.tokenizer = self.loaded.tokenizer
        self.model_config = self.loaded.config  # the family's own config (tests, benchmarks)
        self.spec = self.loaded.spec  # all the engine reads about the model
        self.max_model_len = self.spec.max_sequence_length
        self.max_num_batched_tokens = config.max_num_batched_tokens or default_max_num_batched_tokens(
            self.max_model_len
        )
        self.ops = get_ops(config.kernels, self.loaded.device)
        self.kv_cache = self._make_kv_cache()
        self.runner = ModelRunner(self.loaded, self.ops, self.kv_cache)
        graphs = resolve_graph_mode(config.cuda_graphs, self.loaded.device, self.ops.name)
        if graphs and self.kv_cache.scratch_page is None and config.cuda_graphs == "on":
            log.warning(
                "--cuda-graphs on: no K/V cache pool (--kv-cache-memory 0), so no cached step to graph"
            )
        if graphs and self.kv_cache.scratch_page is not None:  # no pool: no cached step to graph
            self.runner.use_cuda_graphs(max_rows=2 * config.max_num_seqs)  # CFG rows count twice
            default = SamplingParams().resolve(self.default_params)
            if default.cache == "dual":  # its ladder now, not on the first requests' steps
                self.runner.graphs.capture_ladder(default.block_length + self.runner.shift)
        detok = None
        if self.tokenizer is not None:
            detok = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        self.scheduler = Scheduler(
            config.max_num_seqs,
            self.max_num_batched_tokens,
            self.loaded.stop_token_ids,
            detok,
            kv_pages=self.kv_cache.allocator,
            page_size=self.kv_cache.page_size,
        )
        self.step_listeners: list[Callable[[StepStats], None]] = []

    def _make_kv_cache(self) -> KVCache:
        """The K/V pool of the approximate caches, sized from the budget (0 pages: none)."""
        spec = self.spec
        shape = (spec.n_layers, spec.n_kv_heads, spec.head_dim)
        budget = kv_budget_bytes(self.config.kv_cache_memory, self.loaded.device)
        num_pages = budget // KVCache.page_bytes(*shape, self.loaded.dtype)
        try:
            return KVCache(*shape, num_pages, self.loaded.dtype, self.loaded.device)
        except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError is a RuntimeError
            raise ValueError(
                f"cannot allocate a K/V cache pool of {budget / 2**30:.2f} GiB on {self.loaded.device} "
                f"({type(exc).__name__}): lower kv_cache_memory"
            ) from None

    @property
    def default_params(self) -> dict:
        """Sampling defaults: the checkpoint's generation_config.json, the engine's cache mode."""
        defaults = dict(self.loaded.generation_defaults)
        if self.config.cache is not None:
            defaults["cache"] = self.config.cache
        return defaults

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
        vocab = self.spec.vocab_size
        if any((not isinstance(t, int)) or t < 0 or t >= vocab for t in prompt_ids):
            raise ValueError(f"prompt token ids must be integers in [0, {vocab})")
        if self.spec.mask_token_id in prompt_ids:
            raise ValueError("the prompt contains the mask token id")
        return resolved

    def warm_up(self) -> None:
        """Run one tiny request (a 1-token prompt, 1 token, 1 step) to its end: an engine that cannot
        step (kernels its device cannot run, a broken device) fails here, at start, with a one-line
        ValueError instead of failing every request later. AsyncEngine runs it again after a failed
        step, to tell a broken engine from requests that hit a bug. Step listeners do not see it."""
        token = 1 if self.spec.mask_token_id == 0 else 0
        params = SamplingParams(
            max_tokens=1, steps=1, block_length=1, temperature=0.0, cfg_scale=0.0, cache="none"
        )
        listeners, self.step_listeners = self.step_listeners, []
        try:
            self.add_request("warm-up", [token], params)
            while self.has_unfinished():
                self.step()
        except Exception as exc:
            self.abort("warm-up")
            reason = (str(exc).strip().splitlines() or [""])[0]
            hint = ""
            if self.ops.name == "triton" and self.loaded.device.type != "cuda":
                hint = ": Triton kernels need a CUDA device; use the torch kernels"
            raise ValueError(
                f"the engine cannot run a step on {self.loaded.device} with {self.ops.name} kernels"
                f"{hint} ({type(exc).__name__}: {reason})"
            ) from None
        finally:
            self.step_listeners = listeners

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
            self.spec.mask_token_id,
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
