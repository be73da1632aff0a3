"""SamplingParams: every per-request sampling setting, validated with messages a user understands.

Fields left as None take the checkpoint's defaults (its generation_config.json) and then the
engine's built-in ones, through `resolve()`. The checkpoint's `steps` count as tokens per step: a
request that changes max_tokens keeps the checkpoint's pace, not its step count. A resolved
SamplingParams has every field set and has passed the cross-field checks (blocks, steps, modes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

# "entropy" / "margin": Dream's other confidences (its alg "entropy" / "topk_margin"), engine/sampler.py.
REMASKING = ("low_confidence", "random", "entropy", "margin")
SAMPLERS = ("exact", "continuous")
MAX_LOGPROBS = 20  # alternatives per token, as OpenAI's top_logprobs

# "none": every step runs the whole canvas (LLaDA's exact mode). "prefix" / "dual": Fast-dLLM's
# approximate KV caches, refreshed by one full forward on entering each block.
CACHE_MODES = ("none", "prefix", "dual")
# CFG guides with uncond + (w + 1) * (cond - uncond) in fp32: a huge w overflows to inf - inf = NaN.
# LLaDA uses w of a few units; 100 is far beyond any useful guidance and far from overflow.
MAX_CFG_SCALE = 100.0

# Used where neither the request nor the checkpoint says otherwise. steps None -> max_tokens (one
# token per step, the exact mode); block_length None -> max_tokens (one block, pure diffusion).
BUILTIN_DEFAULTS = {
    "max_tokens": 128,
    "sampler": "exact",
    "temperature": 0.0,
    "remasking": "low_confidence",
    "cfg_scale": 0.0,
    "cache": "none",
}

# generation_config.json keys that may carry a default for the field of the same name.
DEFAULTABLE = (
    "max_tokens",
    "steps",
    "block_length",
    "temperature",
    "remasking",
    "cfg_scale",
    "sampler",
    "threshold",
    "factor",
    "logits_eos_inf",
    "confidence_eos_eot_inf",
    "cache",
)


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int | None = None  # generated length (LLaDA's gen_length)
    steps: int | None = None  # denoising steps over all blocks (exact mode)
    block_length: int | None = None  # semi-autoregressive block size; the last block may be shorter
    temperature: float | None = None  # 0: argmax; > 0: sample from softmax(logits / T)
    remasking: str | None = None  # "low_confidence" | "random" | "entropy" | "margin": commit order
    cfg_scale: float | None = None  # unsupervised classifier-free guidance weight w (0: off)
    sampler: str | None = None  # "exact" (LLaDA's fixed schedule) | "continuous" (SMDM/RADD style)
    threshold: float | None = None  # parallel decoding: commit every position with confidence >= t
    factor: float | None = None  # parallel decoding: commit the k-th best while c_k >= 1 - f/(k+1)
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    logits_eos_inf: bool | None = None  # never emit EOS: the answer always fills max_tokens
    confidence_eos_eot_inf: bool | None = None  # EOS/EoT candidates commit last within a block
    early_stop: bool = True  # finish once a finished block holds EOS/EoT instead of running the rest
    ignore_eos: bool = False  # EOS/EoT do not end the answer: every block runs, text keeps going
    cache: str | None = None  # "none" (exact) | "prefix" | "dual": Fast-dLLM's approximate KV caches
    top_k: int | None = None  # temperature > 0: sample among the k most likely tokens (None, -1: all)
    top_p: float | None = None  # temperature > 0: among the fewest tokens whose mass reaches p
    min_p: float | None = None  # temperature > 0: among tokens with probability >= min_p * the top one
    logprobs: int | None = None  # report each committed token's log-probability and this many alternatives

    def __post_init__(self):
        _check_int(self, "max_tokens", 1)
        _check_int(self, "steps", 1)
        _check_int(self, "block_length", 1)
        _check_float(self, "temperature", 0.0)
        _check_float(self, "cfg_scale", 0.0)
        if self.cfg_scale is not None and self.cfg_scale > MAX_CFG_SCALE:
            raise ValueError(f"cfg_scale must be at most {MAX_CFG_SCALE:g}; got {self.cfg_scale:g}")
        if self.remasking is not None and self.remasking not in REMASKING:
            raise ValueError(f"remasking must be one of {', '.join(REMASKING)}; got {self.remasking!r}")
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}; got {self.sampler!r}")
        if self.top_k is not None and self.top_k != -1:
            _check_int(self, "top_k", 1)
        if self.top_p is not None:
            _check_float(self, "top_p", 0.0)
            if not 0.0 < self.top_p <= 1.0:
                raise ValueError(f"top_p must be in (0, 1]; got {self.top_p}")
        if self.min_p is not None:
            _check_float(self, "min_p", 0.0)
            if self.min_p > 1.0:
                raise ValueError(f"min_p must be in [0, 1]; got {self.min_p}")
        _check_int(self, "logprobs", 0)
        if self.logprobs is not None and self.logprobs > MAX_LOGPROBS:
            raise ValueError(f"logprobs must be at most {MAX_LOGPROBS}; got {self.logprobs}")
        if self.cache is not None and self.cache not in CACHE_MODES:
            raise ValueError(f"cache must be one of {', '.join(CACHE_MODES)}; got {self.cache!r}")
        if self.threshold is not None:
            _check_float(self, "threshold", 0.0)
            if not 0.0 < self.threshold <= 1.0:
                raise ValueError(f"threshold must be in (0, 1]; got {self.threshold}")
        _check_float(self, "factor", 0.0)
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be an integer; got {self.seed!r}")
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        if any(not isinstance(s, str) or not s for s in stop):
            raise ValueError("stop must be a string or a list of non-empty strings")
        object.__setattr__(self, "stop", stop)

    @property
    def num_blocks(self) -> int:
        return math.ceil(self.max_tokens / self.block_length)

    @property
    def mode(self) -> str:
        """The unmasking policy: "schedule" (exact), "continuous", "threshold" or "factor"."""
        if self.threshold is not None:
            return "threshold"
        if self.factor is not None:
            return "factor"
        return "continuous" if self.sampler == "continuous" else "schedule"

    def resolve(self, defaults: dict | None = None) -> SamplingParams:
        """Fill unset fields from `defaults` (a generation_config) then built-ins, and cross-check."""
        merged = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and defaults and f.name in DEFAULTABLE:
                value = defaults.get(f.name)
            if value is None:
                value = BUILTIN_DEFAULTS.get(f.name)
            merged[f.name] = value
        merged["logits_eos_inf"] = bool(merged["logits_eos_inf"])
        merged["confidence_eos_eot_inf"] = bool(merged["confidence_eos_eot_inf"])
        if self.threshold is not None or self.factor is not None:
            # A request that picks one parallel mode must not inherit the other from the checkpoint,
            # nor a continuous-time default sampler (RADD's), which combines with neither.
            merged["threshold"], merged["factor"] = self.threshold, self.factor
            if self.sampler is None:
                merged["sampler"] = "exact"
        elif self.sampler == "continuous":
            # ... and a request that picks the continuous sampler does not inherit parallel decoding.
            merged["threshold"] = merged["factor"] = None
        if merged["block_length"] is None or merged["block_length"] > merged["max_tokens"]:
            merged["block_length"] = merged["max_tokens"]
        if self.steps is None and defaults and defaults.get("steps") and defaults.get("max_tokens"):
            # The checkpoint's steps go with its max_tokens: keep its tokens per step, not its count.
            per_step = defaults["max_tokens"] / defaults["steps"]
            blocks = math.ceil(merged["max_tokens"] / merged["block_length"])
            merged["steps"] = max(math.ceil(merged["max_tokens"] / per_step), blocks)
        resolved = replace(self, **merged)
        if resolved.steps is None:
            object.__setattr__(resolved, "steps", resolved.max_tokens)
        if resolved.threshold is not None and resolved.factor is not None:
            raise ValueError("threshold and factor are two parallel decoding modes: set at most one")
        if resolved.sampler == "continuous" and (resolved.threshold is not None or resolved.factor):
            raise ValueError("the continuous sampler does not combine with threshold or factor decoding")
        if resolved.steps < resolved.num_blocks:
            raise ValueError(
                f"steps ({resolved.steps}) must be at least the number of blocks "
                f"({resolved.num_blocks} = ceil(max_tokens {resolved.max_tokens} / "
                f"block_length {resolved.block_length}))"
            )
        return resolved

    @property
    def filters_tokens(self) -> bool:
        """Whether top_k, top_p or min_p narrows the sampled distribution (only at temperature > 0)."""
        narrowed = (self.top_k not in (None, -1)) or (self.top_p not in (None, 1.0)) or bool(self.min_p)
        return self.temperature > 0 and narrowed

    @property
    def num_rows(self) -> int:
        """Rows a request takes in a forward: the conditional one, and an unconditional one for CFG."""
        return 2 if self.cfg_scale > 0 else 1

    @property
    def is_cached(self) -> bool:
        return self.cache in ("prefix", "dual")

    def steps_for_block(self, block: int) -> int:
        """Steps are split equally over blocks; the first (steps mod num_blocks) blocks get one more."""
        base, extra = divmod(self.steps, self.num_blocks)
        return base + (1 if block < extra else 0)


def _check_int(params, name: str, minimum: int) -> None:
    value = getattr(params, name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}; got {value}")


def _check_float(params, name: str, minimum: float) -> None:
    value = getattr(params, name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}; got {value}")
