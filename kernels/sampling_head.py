"""Sampling head: logits of selected positions -> candidate token and its confidence, in one pass.

Semantics (DESIGN.md section 2), per row r of logits [R, V]:
    lg = logits                                         (fp32)
    lg = uncond + (cfg_scale + 1) * (logits - uncond)   when `uncond` is given (CFG);
        a column that is -inf in either row stays -inf (banned tokens are -inf in both rows)
    token = argmax(lg)                                  when temperature[r] == 0 (first index on ties)
            a sample from softmax(lg / temperature[r])  otherwise
    prob  = softmax(lg)[token]                          (un-tempered: LLaDA's low_confidence score)
A row whose entries are all -inf is not supported.

Reference (`sample_head_ref`, also the engine's sampler on the torch backend): float64 Gumbel-max as
in LLaDA's sampler, argmax(lg / T + g) with g = -log(-log u), u = uniform64(seeds[r], column) from
kernels/counter_rng.py, one GUMBEL_CHUNK of columns at a time (no float64 tensor over the whole
vocabulary); greedy rows take the argmax; probabilities from an fp32 softmax.

Kernel (`sample_head`): one program per row, one pass over the vocabulary in BLOCK_V chunks keeping
an online max m, sum-exp s = sum(exp(lg - m)), and the best race key with its index and logit. At
T > 0 the key is the exponential race lg / T - log(E), E = -log1p(-x) ~ Exp(1), where x is a uniform
built from two Philox words (48 random bits, fp32 relative precision down to x ~ 1e-14) so the
upper tail of the race, which decides the winner among ~1e5 columns, is not truncated at 2^-24 as
it would be with a plain fp32 uniform. Philox counters are (seed = seeds[r], offset = column), so the
draw does not depend on BLOCK_V or the launch shape, and the same seeds give the same tokens. The
kernel draws from the same distribution as the reference, not the same samples.
Split rows: few rows (a 32-token block of one sequence) would leave most SMs idle while each program
streams a whole 126k-column row, so then (`choose_head_splits`, from shapes only) each row's
vocabulary is also split into NUM_SPLITS BLOCK_V-aligned ranges whose programs store partial (m, s,
key, logit, index), and `_combine_head_splits_kernel` merges them: the same chunks and keys, so the
same tokens as one program per row (first index on ties), and probabilities equal up to rounding.
Limits: V < 2^31; logits/uncond fp32, fp16 or bf16 with unit stride along V; noise is fp32-grade;
at most 64 splits.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import _device
from kernels._cast import INTERPRET
from kernels.counter_rng import uniform64

GUMBEL_CHUNK = 16384  # vocabulary columns per float64 step of the reference
BLOCK_V = 2048  # vocabulary columns per loop step on a GPU (512 under the interpreter)


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

    Returns (tokens [R] int64, probs [R] fp32). Also the engine's sampler on the torch backend.
    """
    guided = _cfg_logits(logits, uncond, cfg_scale)  # [R, V] fp32
    tokens = guided.max(dim=-1).indices  # first index on ties, like argmax
    sampled = (temperature > 0).nonzero().flatten()
    if sampled.numel():
        tokens[sampled] = _gumbel_max(guided[sampled], temperature[sampled], seeds[sampled])
    probs = torch.softmax(guided, dim=-1).gather(1, tokens[:, None]).squeeze(1)
    return tokens, probs


def max_probability_ref(logits: torch.Tensor) -> torch.Tensor:
    """[R, V] -> [R] fp32: each row's largest softmax probability, which is the probability
    `sample_head_ref` gives its temperature-0 token (the argmax's exp(0) / sum), bit for bit."""
    return torch.softmax(logits.float(), dim=-1).amax(dim=-1)


def _gumbel_max(guided: torch.Tensor, temperature: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """argmax(lg / T - log(-log u)) in float64, one GUMBEL_CHUNK of the vocabulary at a time, with
    u = uniform64(seed, column): no float64 tensor over the whole vocabulary."""
    rows, vocab = guided.shape
    inv_t = 1.0 / temperature.double()[:, None]
    best = torch.full((rows,), float("-inf"), dtype=torch.float64, device=guided.device)
    best_idx = torch.zeros(rows, dtype=torch.int64, device=guided.device)
    for start in range(0, vocab, GUMBEL_CHUNK):
        cols = torch.arange(start, min(start + GUMBEL_CHUNK, vocab), device=guided.device)
        u = uniform64(seeds, cols)
        score = guided[:, start : start + GUMBEL_CHUNK].double() * inv_t - torch.log(-torch.log(u))
        value, idx = score.max(dim=-1)
        better = value > best
        best = torch.where(better, value, best)
        best_idx = torch.where(better, idx + start, best_idx)
    return best_idx


@triton.jit
def _exp1_noise(SEED, cols):
    """Exp(1) variates for (SEED, cols): E = -log1p(-x), x uniform in (0, 1) from 48 Philox bits."""
    r0, r1, _, _ = tl.randint4x(SEED, cols)
    hi = (r0.to(tl.uint32, bitcast=True) >> 8).to(tl.float32)  # [0, 2^24), exact in fp32
    lo = (r1.to(tl.uint32, bitcast=True) >> 8).to(tl.float32)
    x = hi * 5.9604644775390625e-08 + (lo + 0.5) * 3.552713678800501e-15  # 2^-24, 2^-48
    x = tl.minimum(x, 0.99999994)  # rounding can reach 1.0; keep E finite
    w = 1.0 - x
    # log1p(-x) without libdevice: log(w) * -x / (w - 1) is accurate to a few ulps (w - 1 is exact)
    return tl.where(w == 1.0, x, -tl.log(w) * x / (1.0 - w))


@triton.jit
def _sample_head_kernel(
    LOGITS,  # [R, V]
    UNCOND,  # [R, V] (unused unless HAS_UNCOND)
    TEMP,  # [R] fp32
    SEEDS,  # [R] int64
    TOKENS,  # [R] int64 out (NUM_SPLITS == 1)
    PROBS,  # [R] fp32 out (NUM_SPLITS == 1)
    PART,  # [R, NUM_SPLITS, 4] fp32 out: max, sum-exp, best key, its logit (NUM_SPLITS > 1)
    PART_IDX,  # [R, NUM_SPLITS] int32 out: best index (NUM_SPLITS > 1)
    V,
    STRIDE_L,
    STRIDE_U,
    CFG_W1,  # cfg_scale + 1
    HAS_UNCOND: tl.constexpr,
    BLOCK_V: tl.constexpr,
    NUM_SPLITS: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    share = tl.cdiv(tl.cdiv(V, NUM_SPLITS), BLOCK_V) * BLOCK_V  # whole chunks: the same as unsplit
    col_start = split * share
    col_end = tl.minimum(col_start + share, V)
    temp = tl.load(TEMP + row)
    seed = tl.load(SEEDS + row)
    is_sample = temp > 0.0
    inv_t = 1.0 / tl.where(is_sample, temp, 1.0)
    offs = tl.arange(0, BLOCK_V)
    neg_inf = float("-inf")
    m = tl.full((), neg_inf, tl.float32)  # running max of lg (guided logits)
    s = tl.full((), 0.0, tl.float32)  # running sum of exp(lg - m)
    best_key = tl.full((), neg_inf, tl.float32)
    best_l = tl.full((), neg_inf, tl.float32)
    best_idx = tl.full((), 0, tl.int32)
    for start in range(col_start, col_end, BLOCK_V):
        cols = start + offs
        mask = cols < col_end
        lg = tl.load(LOGITS + row * STRIDE_L + cols, mask=mask, other=neg_inf).to(tl.float32)
        if HAS_UNCOND:
            u = tl.load(UNCOND + row * STRIDE_U + cols, mask=mask, other=neg_inf).to(tl.float32)
            banned = (lg == neg_inf) | (u == neg_inf)
            lg = tl.where(banned, 0.0, lg)  # no (-inf) - (-inf) below
            u = tl.where(banned, 0.0, u)
            lg = tl.where(banned, neg_inf, u + CFG_W1 * (lg - u))
        m_new = tl.maximum(m, tl.max(lg, 0))
        m_safe = tl.where(m_new == neg_inf, 0.0, m_new)  # no (-inf) - (-inf) while all banned
        s = s * tl.exp(m - m_safe) + tl.sum(tl.exp(lg - m_safe), 0)
        m = m_new
        if is_sample:
            key = lg * inv_t - tl.log(_exp1_noise(seed, cols))  # exponential race == Gumbel-max
        else:
            key = lg
        chunk_key = tl.max(key, 0)
        chunk_idx = tl.argmax(key, 0)  # first index on ties
        chunk_l = tl.sum(tl.where(offs == chunk_idx, lg, 0.0), 0)
        better = chunk_key > best_key  # strict: earlier chunk wins ties
        best_idx = tl.where(better, start + chunk_idx, best_idx)
        best_l = tl.where(better, chunk_l, best_l)
        best_key = tl.where(better, chunk_key, best_key)
    if NUM_SPLITS > 1:
        part = PART + (row * NUM_SPLITS + split) * 4
        tl.store(part, m)
        tl.store(part + 1, s)
        tl.store(part + 2, best_key)
        tl.store(part + 3, best_l)
        tl.store(PART_IDX + row * NUM_SPLITS + split, best_idx)
    else:
        tl.store(TOKENS + row, best_idx.to(tl.int64))
        tl.store(PROBS + row, tl.exp(best_l - m) / s)


@triton.jit
def _combine_head_splits_kernel(
    PART,  # [R, NUM_SPLITS, 4] fp32: max, sum-exp, best key, its logit
    PART_IDX,  # [R, NUM_SPLITS] int32
    TOKENS,  # [R] int64 out
    PROBS,  # [R] fp32 out
    NUM_SPLITS: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    """One row per program: the first split with the largest key wins; the sum-exps are rescaled to
    the row's max. A split that saw only banned (-inf) columns, or none, has s = 0 and key -inf."""
    row = tl.program_id(0).to(tl.int64)
    splits = tl.arange(0, BLOCK_S)
    valid = splits < NUM_SPLITS
    part = PART + (row * NUM_SPLITS + splits) * 4
    neg_inf = float("-inf")
    m = tl.load(part, mask=valid, other=neg_inf)
    s = tl.load(part + 1, mask=valid, other=0.0)
    key = tl.load(part + 2, mask=valid, other=neg_inf)
    best_l = tl.load(part + 3, mask=valid, other=neg_inf)
    idx = tl.load(PART_IDX + row * NUM_SPLITS + splits, mask=valid, other=0)
    m_row = tl.max(m, 0)
    total = tl.sum(tl.where(s > 0.0, s * tl.exp(m - m_row), 0.0), 0)
    win = splits == tl.argmax(key, 0)  # first index on ties
    tl.store(TOKENS + row, tl.sum(tl.where(win, idx, 0), 0).to(tl.int64))
    tl.store(PROBS + row, tl.exp(tl.sum(tl.where(win, best_l, 0.0), 0) - m_row) / total)


def choose_head_splits(num_rows: int, vocab: int, block_v: int, sm_count: int) -> int:
    """Split each row's vocabulary across programs when the rows alone cannot fill the GPU: about
    two programs per SM, each with at least 4 chunks of BLOCK_V, at most 16 splits. Shapes only."""
    return _device.splits_to_fill(num_rows, triton.cdiv(vocab, block_v) // 4, sm_count)


def max_probability(logits: torch.Tensor) -> torch.Tensor:
    """Triton version of `max_probability_ref`: the sampling head's probability at temperature 0."""
    rows, device = logits.shape[0], logits.device
    zeros = torch.zeros(rows, dtype=torch.float32, device=device)
    return sample_head(logits, zeros, torch.zeros(rows, dtype=torch.int64, device=device))[1]


def sample_head(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    seeds: torch.Tensor,
    uncond: torch.Tensor | None = None,
    cfg_scale: float = 0.0,
    num_splits: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton version of `sample_head_ref` (same distribution, not the same draws).

    num_splits: vocabulary splits per row (None: `choose_head_splits` on the device's SM count; 1 on
    CPU). With more than one, partials go to a small fp32 workspace and a second kernel merges them.
    """
    assert logits.dim() == 2, f"logits must be [R, V], got {tuple(logits.shape)}"
    num_rows, vocab = logits.shape
    assert logits.dtype in (torch.float32, torch.float16, torch.bfloat16), logits.dtype
    assert logits.stride(1) == 1, "logits must have unit stride along the vocabulary"
    assert temperature.shape == (num_rows,) and temperature.dtype == torch.float32
    assert seeds.shape == (num_rows,) and seeds.dtype == torch.int64
    assert temperature.is_contiguous() and seeds.is_contiguous()
    assert temperature.device == logits.device and seeds.device == logits.device
    assert 0 < vocab < 2**31
    if uncond is not None:
        assert uncond.shape == logits.shape and uncond.dtype == logits.dtype, "uncond must match logits"
        assert uncond.stride(1) == 1 and uncond.device == logits.device
    device = logits.device
    tokens = torch.empty(num_rows, dtype=torch.int64, device=device)
    probs = torch.empty(num_rows, dtype=torch.float32, device=device)
    if num_rows == 0:
        return tokens, probs
    block_v = min(512 if INTERPRET else BLOCK_V, triton.next_power_of_2(vocab))
    if num_splits is None:
        num_splits = choose_head_splits(num_rows, vocab, block_v, _device.sm_count(device))
    assert 1 <= num_splits <= 64, f"num_splits must be in 1..64, got {num_splits}"
    if num_splits > 1:
        part = torch.empty((num_rows, num_splits, 4), dtype=torch.float32, device=device)
        part_idx = torch.empty((num_rows, num_splits), dtype=torch.int32, device=device)
    else:
        part, part_idx = probs, probs  # unused
    _sample_head_kernel[(num_rows, num_splits)](
        logits,
        logits if uncond is None else uncond,
        temperature,
        seeds,
        tokens,
        probs,
        part,
        part_idx,
        vocab,
        logits.stride(0),
        logits.stride(0) if uncond is None else uncond.stride(0),
        float(cfg_scale) + 1.0,
        HAS_UNCOND=uncond is not None,
        BLOCK_V=block_v,
        NUM_SPLITS=num_splits,
        num_warps=8 if block_v >= BLOCK_V else 4,
    )
    if num_splits > 1:
        _combine_head_splits_kernel[(num_rows,)](
            part,
            part_idx,
            tokens,
            probs,
            NUM_SPLITS=num_splits,
            BLOCK_S=max(2, triton.next_power_of_2(num_splits)),
            num_warps=1,
        )
    return tokens, probs
