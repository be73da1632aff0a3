"""Sampling head: logits of selected positions -> candidate token and its confidence, in one pass.

Semantics (DESIGN.md section 2), per row r of logits [R, V]:
    l = logits                                         (fp32)
    l = uncond + (cfg_scale + 1) * (logits - uncond)   when `uncond` is given (CFG);
        a column that is -inf in either row stays -inf (banned tokens are -inf in both rows)
    token = argmax(l)                                  when temperature[r] == 0 (first index on ties)
            a sample from softmax(l / temperature[r])  otherwise
    prob  = softmax(l)[token]                          (un-tempered: LLaDA's low_confidence score)
A row whose entries are all -inf is not supported.

Reference (`sample_head_ref`): float64 Gumbel-max as in LLaDA's sampler, argmax(l / T + g) with
g = -log(-log u), u drawn by a torch.Generator seeded with seeds[r]; rows are looped in Python. It
materialises float64 over the vocabulary: fine for tests, not for serving.

Kernel (`sample_head`): one program per row, one pass over the vocabulary in BLOCK_V chunks keeping
an online max m, sum-exp s = sum(exp(l - m)), and the best race key with its index and logit. At
T > 0 the key is the exponential race l / T - log(E), E = -log1p(-x) ~ Exp(1), where x is a uniform
built from two Philox words (48 random bits, fp32 relative precision down to x ~ 1e-14) so the
upper tail of the race, which decides the winner among ~1e5 columns, is not truncated at 2^-24 as
it would be with a plain fp32 uniform. Philox counters are (seed = seeds[r], offset = column), so the
draw does not depend on BLOCK_V or the launch shape, and the same seeds give the same tokens. The
kernel draws from the same distribution as the reference, not the same samples.
Limits: V < 2^31; logits/uncond fp32, fp16 or bf16 with unit stride along V; noise is fp32-grade.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _cfg_logits(logits: torch.Tensor, uncond: torch.Tensor | None, cfg_scale: float) -> torch.Tensor:
    """[R, V] fp32 guided logits; columns that are -inf in either input stay -inf."""
    cond = logits.float()
    if uncond is None:
        return cond
    un = uncond.float()
    guided = un + (cfg_scale + 1.0) * (cond - un)
    banned = torch.isneginf(cond) | torch.isneginf(un)
    return guided.masked_fill(banned, float("-inf"))


def sample_head_ref(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    seeds: torch.Tensor,
    uncond: torch.Tensor | None = None,
    cfg_scale: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """logits, uncond: [R, V]; temperature: [R] fp32; seeds: [R] int64.

    Returns (tokens [R] int64, probs [R] fp32).
    """
    guided = _cfg_logits(logits, uncond, cfg_scale).double()  # [R, V]
    log_probs = torch.log_softmax(guided, dim=-1)
    tokens = torch.empty(guided.shape[0], dtype=torch.int64, device=logits.device)
    temps = temperature.tolist()
    row_seeds = seeds.tolist()
    for r in range(guided.shape[0]):
        if temps[r] == 0.0:
            tokens[r] = torch.argmax(guided[r])
            continue
        gen = torch.Generator(device=logits.device).manual_seed(int(row_seeds[r]))
        u = torch.rand(guided.shape[1], dtype=torch.float64, device=logits.device, generator=gen)
        gumbel = -torch.log(-torch.log(u))
        tokens[r] = torch.argmax(guided[r] / temps[r] + gumbel)
    probs = log_probs.gather(1, tokens[:, None]).squeeze(1).exp().float()
    return tokens, probs
