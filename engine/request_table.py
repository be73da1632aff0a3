"""The running requests' sampling settings on the device, one slot each, kept across steps.

In the spirit of vLLM v1's persistent input batch: a request's settings never change, so they are
packed into its slot (a column of two small tables) once, on the first step it takes, and the slot is
given back once it no longer takes steps. A step gathers its requests' columns with one index per
table, and only when its list of requests differs from the last step's (a request joined or left, or
moved between the forward and reuse lists); otherwise it reuses the last `BatchSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.transfer import int_tensor, to_device
from engine.unmasking import MODES
from kernels.counter_rng import mix64_int


@dataclass
class BatchSettings:
    """The settings of a step's requests, in row order: [B] tensors on the device."""

    requests: tuple  # compared by identity
    modes: set[str]  # unmasking policies used
    used: set[str]  # settings some request uses: see `_flags`
    max_top_k: int  # the largest top_k asked for (0: none)
    seed_keys: list[int]  # mix64_int(seed) per request: a step's key is mix64_int(it + step)
    mode: torch.Tensor  # int64, index into MODES
    eos_ban: torch.Tensor  # bool: logits_eos_inf
    stop_ban: torch.Tensor  # bool: confidence_eos_eot_inf
    random_confidence: torch.Tensor  # bool: `random` remasking
    top_k: torch.Tensor  # int64 (0: off)
    temperature: torch.Tensor  # fp32
    threshold: torch.Tensor  # fp32
    factor: torch.Tensor  # fp32
    top_p: torch.Tensor  # float64 (1: off)
    min_p: torch.Tensor  # float64 (0: off)

    @property
    def plain(self) -> bool:
        """Every request is LLaDA's default: the fixed schedule, temperature 0, low_confidence, no
        bans, filters or logprobs (engine/post_forward.py takes a shorter path)."""
        return not self.used and self.modes == {"schedule"}


@dataclass(frozen=True)
class _Entry:
    """What the host keeps of a request in the table."""

    slot: int
    mode: str
    flags: frozenset[str]
    top_k: int
    seed_key: int


def _flags(params) -> frozenset[str]:
    """ "sampled" (temperature > 0), "random", "entropy", "margin" (remasking), "logits_eos_inf",
    "confidence_eos_eot_inf", "filters" (top_k/top_p/min_p narrow a sampled row), and "top_k",
    "top_p", "min_p", "logprobs" (set)."""
    flags = (
        ("sampled", params.temperature > 0),
        ("random", params.remasking == "random"),
        ("entropy", params.remasking == "entropy"),
        ("margin", params.remasking == "margin"),
        ("logits_eos_inf", params.logits_eos_inf),
        ("confidence_eos_eot_inf", params.confidence_eos_eot_inf),
        ("filters", params.filters_tokens),
        ("top_k", params.top_k is not None),
        ("top_p", params.top_p is not None),
        ("min_p", params.min_p is not None),
        ("logprobs", params.logprobs is not None),
    )
    return frozenset(name for name, on in flags if on)


class RequestTable:
    """ints [5, slots]: mode id, logits_eos_inf, confidence_eos_eot_inf, random remasking, top_k;
    floats [5, slots] float64: temperature, threshold, factor, top_p, min_p."""

    def __init__(self, device: torch.device):
        self.device = device
        self.ints = torch.zeros((5, 0), dtype=torch.int64, device=device)
        self.floats = torch.zeros((5, 0), dtype=torch.float64, device=device)
        self.entries: dict = {}  # Request -> _Entry
        self.free: list[int] = []
        self._last: BatchSettings | None = None

    def settings(self, requests: list) -> BatchSettings:
        """The settings of `requests` (those taking the step, in row order)."""
        key = tuple(requests)
        if self._last is not None and self._last.requests == key:
            return self._last
        live = set(key)
        for req in [r for r in self.entries if r not in live]:  # no longer stepping
            self.free.append(self.entries.pop(req).slot)
        new = [r for r in requests if r not in self.entries]
        if new:
            self._add(new)
        entries = [self.entries[r] for r in requests]
        index = to_device(int_tensor(e.slot for e in entries), self.device)
        i = self.ints.index_select(1, index).unbind(0)
        f = self.floats.index_select(1, index).unbind(0)
        self._last = BatchSettings(
            requests=key,
            modes={e.mode for e in entries},
            used=set().union(*(e.flags for e in entries)),
            max_top_k=max(e.top_k for e in entries),
            seed_keys=[e.seed_key for e in entries],
            mode=i[0],
            eos_ban=i[1].bool(),
            stop_ban=i[2].bool(),
            random_confidence=i[3].bool(),
            top_k=i[4],
            temperature=f[0].float(),
            threshold=f[1].float(),
            factor=f[2].float(),
            top_p=f[3],
            min_p=f[4],
        )
        return self._last

    def _add(self, requests: list) -> None:
        """Give each request a slot and write its settings there (one copy per table for all)."""
        need = len(requests) - len(self.free)
        if need > 0:
            self._grow(self.ints.shape[1] + need)
        ints, floats = [], []
        for req in requests:
            p = req.params
            top_k = 0 if p.top_k in (None, -1) else p.top_k
            slot = self.free.pop()
            self.entries[req] = _Entry(slot, p.mode, _flags(p), top_k, mix64_int(req.seed))
            random = p.remasking == "random"
            ints.append((MODES.index(p.mode), p.logits_eos_inf, p.confidence_eos_eot_inf, random, top_k))
            top_p = 1.0 if p.top_p is None else p.top_p
            floats.append((p.temperature, p.threshold or 0.0, p.factor or 0.0, top_p, p.min_p or 0.0))
        slots = to_device(int_tensor(self.entries[r].slot for r in requests), self.device)
        self.ints.index_copy_(
            1, slots, to_device(torch.tensor(ints, dtype=torch.int64).T.contiguous(), self.device)
        )
        self.floats.index_copy_(
            1, slots, to_device(torch.tensor(floats, dtype=torch.float64).T.contiguous(), self.device)
        )

    def _grow(self, min_slots: int) -> None:
        old = self.ints.shape[1]
        size = max(min_slots, 2 * old, 8)
        for name in ("ints", "floats"):
            table = getattr(self, name)
            grown = torch.zeros((table.shape[0], size), dtype=table.dtype, device=self.device)
            grown[:, :old] = table
            setattr(self, name, grown)
        self.free.extend(range(size - 1, old - 1, -1))  # pop() hands out the lowest first
