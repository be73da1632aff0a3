"""Mixture of experts (LLaDA-MoE): top-k routing and the grouped expert MLP.

Routing (`route_ref`): scores = softmax(h @ router_w.T) in fp32 over all E experts (+ expert_bias
when given); each token takes the k experts of highest score, weighted by those scores, not
renormalised (LLaDA-MoE hard-codes norm_topk_prob off). The expert MLP (`moe_ref`, `grouped_moe`):
out[t] = sum_j weights[t, j] * expert_{experts[t, j]}(h[t]) with expert_e(x) = W2_e (silu(G_e x) * U_e x);
w_gate_up [E, 2I, d] holds per expert the I gate rows, then the I up rows (dInfer's fused `mlp.w1`),
w_down [E, d, I] (`mlp.w2`). Weights are rounded to h's dtype, the k slots summed in fp32.

Kernel (`grouped_moe`): the N*k (token, expert) pairs, "slots" (slot t*k + j), are sorted by expert on
the device, each expert's run padded to a multiple of BLOCK_M (`align_by_expert`: argsort and
cumsums, no host sync), and a table gives the expert of each BLOCK_M-slot block. One launch of
`_moe_gemm_kernel` runs every expert's gate/up GEMM (a program: one block of one expert's slots x
BLOCK_N columns, gathering its tokens' rows of h, streaming both weight tiles over d) with SwiGLU in
fp32 in the epilogue, writing the activations [N*k, I] by slot; a second launch of the same kernel runs
every down GEMM and scales each row by its routing weight, writing [N*k, d] by slot; torch sums the
k slots of each token. Experts no token chose get no block; the grid is an upper bound on the
blocks (`max_blocks`, from shapes only), and its spare programs return at once. fp32 accumulation;
fp32 inputs use IEEE dots, not TF32.
Limits: h, weights of one dtype (fp32, fp16, bf16), unit stride along their last dim; experts
values in [0, E) (not checked: a host sync). Tokens of an expert with fewer than BLOCK_M slots pad
their block with masked rows: at 1 token a block of 16 does 1/16 useful work (the weights are
read once either way, which is what bounds that case).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels._cast import INTERPRET, cast_rne
from kernels.swiglu import swiglu_ref


def route_ref(
    h: torch.Tensor, router_w: torch.Tensor, top_k: int, expert_bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """h [N, d], router_w [E, d], expert_bias [E] | None. Returns (weights [N, k] fp32, experts [N, k]
    int64), highest score first; the bias is part of the scores, so of the weights too."""
    scores = torch.softmax((h @ router_w.T).float(), dim=-1)
    if expert_bias is not None:
        scores = scores + expert_bias.float()
    weights, experts = torch.topk(scores, top_k, dim=-1)
    return weights, experts


def moe_ref(
    h: torch.Tensor,
    w_gate_up: torch.Tensor,
    w_down: torch.Tensor,
    weights: torch.Tensor,
    experts: torch.Tensor,
) -> torch.Tensor:
    """h [N, d]; w_gate_up [E, 2I, d]; w_down [E, d, I]; weights [N, k]; experts [N, k] int.
    A loop over the experts chosen (host syncs); matmuls in h's dtype, the sum in fp32. Returns [N, d]."""
    inter = w_down.shape[2]
    weights = weights.to(h.dtype)
    out = torch.zeros(h.shape, dtype=torch.float32, device=h.device)
    for expert in experts.unique().tolist():
        tokens, slots = torch.where(experts == expert)
        gate_up = h[tokens] @ w_gate_up[expert].T  # [n, 2I]
        y = swiglu_ref(gate_up[:, :inter], gate_up[:, inter:]) @ w_down[expert].T  # [n, d]
        out.index_add_(0, tokens, y.float() * weights[tokens, slots, None].float())
    return out.to(h.dtype)


@triton.jit
def _moe_gemm_kernel(
    X,  # GATED: h [N, K]; else the activations [N*k, K]
    W,  # [E, 2 * N_OUT, K] gate rows then up rows (GATED), or [E, N_OUT, K]
    OUT,  # [N*k, N_OUT] contiguous, one row per slot
    ROUTE_W,  # not GATED: [N*k] routing weights in X's dtype; else unused
    SLOT_IDS,  # [num_blocks * BLOCK_M] int32: slots by expert, each run padded to BLOCK_M with NUM_SLOTS
    BLOCK_EXPERT,  # [num_blocks] int32: the expert of each BLOCK_M run of SLOT_IDS, -1 past the last
    NUM_SLOTS,  # N*k
    TOP_K,  # slots per token: slot s reads row s // TOP_K of X when GATED
    N_OUT,
    K,
    STRIDE_XN,
    STRIDE_WE,
    STRIDE_WN,
    GATED: tl.constexpr,  # two weight tiles, SwiGLU epilogue; else one, routing-weight epilogue
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr,  # interpreter: compute in fp32 (bf16 arithmetic is not emulated)
    DOT_PRECISION: tl.constexpr,
):
    block = tl.program_id(0)
    expert = tl.load(BLOCK_EXPERT + block)
    if expert < 0:  # a spare block of the upper-bound grid
        return
    slots = tl.load(SLOT_IDS + block * BLOCK_M + tl.arange(0, BLOCK_M))
    row_mask = slots < NUM_SLOTS
    x_rows = (slots // TOP_K if GATED else slots).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < N_OUT
    ks = tl.arange(0, BLOCK_K)
    x_ptrs = X + x_rows[:, None] * STRIDE_XN + ks[None, :]  # [BLOCK_M, BLOCK_K]
    w_ptrs = W + expert.to(tl.int64) * STRIDE_WE + cols.to(tl.int64)[None, :] * STRIDE_WN + ks[:, None]
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    acc_up = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k_start in range(0, K, BLOCK_K):
        k_mask = ks < K - k_start
        x = tl.load(x_ptrs, mask=row_mask[:, None] & k_mask[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=k_mask[:, None] & col_mask[None, :], other=0.0)  # [BLOCK_K, BLOCK_N]
        if UPCAST:
            x = x.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(x, w, acc, input_precision=DOT_PRECISION)
        if GATED:
            w_up = tl.load(w_ptrs + N_OUT * STRIDE_WN, mask=k_mask[:, None] & col_mask[None, :], other=0.0)
            if UPCAST:
                w_up = w_up.to(tl.float32)
            acc_up = tl.dot(x, w_up, acc_up, input_precision=DOT_PRECISION)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    if GATED:
        out = acc / (1.0 + tl.exp(-acc)) * acc_up  # silu(gate) * up
    else:
        out = acc * tl.load(ROUTE_W + slots, mask=row_mask, other=0.0).to(tl.float32)[:, None]
    tl.store(
        OUT + slots.to(tl.int64)[:, None] * N_OUT + cols[None, :],
        cast_rne(out, OUT.dtype.element_ty, UPCAST),
        mask=row_mask[:, None] & col_mask[None, :],
    )


@dataclass(frozen=True)
class MoeConfig:
    """Tiles and launch options of `_moe_gemm_kernel` (both launches)."""

    block_m: int  # slots per program, all of one expert
    block_n: int  # output columns per program
    block_k: int  # reduction step
    num_warps: int = 4
    num_stages: int = 3


def moe_config(num_slots: int, num_experts: int, dtype: torch.dtype) -> MoeConfig:
    """From shapes only (no host sync). BLOCK_M follows the average slots per expert (16 at a few
    tokens, 64 once experts hold many: wgmma tiles on Hopper); 4 stages of weight tiles in flight
    where their read bounds the time (BLOCK_M <= 32). fp32's IEEE dots take half the reduction step,
    and 8 warps from 32 rows, where 4 would spill. Each choice compiles for sm_90 without spills
    (tests/kernels/compile_sm90.py); none is tuned on a GPU yet."""
    avg = triton.cdiv(num_slots, num_experts)
    block_m = 16 if avg <= 16 else (32 if avg <= 32 else 64)
    if dtype == torch.float32:
        return MoeConfig(block_m, 64, 32, num_warps=8 if block_m >= 32 else 4, num_stages=3)
    return MoeConfig(block_m, 64, 64, num_warps=4, num_stages=4 if block_m <= 32 else 3)


def max_blocks(num_slots: int, num_experts: int, block_m: int) -> int:
    """An upper bound on sum_e cdiv(slots of e, block_m), from shapes: each of at most
    min(E, N*k) experts chosen pads its run by at most block_m - 1 slots."""
    return (num_slots + min(num_experts, num_slots) * (block_m - 1)) // block_m


def align_by_expert(
    experts: torch.Tensor, num_experts: int, block_m: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """experts [N, k] int. Returns (slot_ids [B * block_m] int32: the slots 0..N*k-1 grouped by
    expert in ascending order, each expert's run padded to a multiple of block_m with N*k;
    block_expert [B] int32: each block's expert, -1 for the spare blocks at the end), where
    B = `max_blocks`. Device ops only (a stable sort, binary searches, gathers, one scatter), no
    host sync, deterministic."""
    flat = experts.flatten()
    num_slots, device = flat.numel(), flat.device
    order = torch.argsort(flat, stable=True)  # slots sorted by expert
    by_expert = flat[order]
    ids = torch.arange(num_experts + 1, dtype=flat.dtype, device=device)
    first = torch.searchsorted(by_expert, ids)  # [E + 1] where each expert's run starts in `order`
    blocks = (first.diff() + block_m - 1) // block_m
    blocks_end = blocks.cumsum(0)  # inclusive
    rank = torch.arange(num_slots, device=device) - first[by_expert]
    target = (blocks_end - blocks)[by_expert] * block_m + rank
    num_blocks = max_blocks(num_slots, num_experts, block_m)
    slot_ids = torch.full((num_blocks * block_m,), num_slots, dtype=torch.int32, device=device)
    slot_ids.scatter_(0, target, order.to(torch.int32))
    block_ids = torch.arange(num_blocks, device=device)
    block_expert = torch.searchsorted(blocks_end, block_ids, right=True)  # E past the last block
    block_expert = torch.where(block_expert < num_experts, block_expert, -1).to(torch.int32)
    return slot_ids, block_expert


def grouped_moe(
    h: torch.Tensor,
    w_gate_up: torch.Tensor,
    w_down: torch.Tensor,
    weights: torch.Tensor,
    experts: torch.Tensor,
    config: MoeConfig | None = None,
) -> torch.Tensor:
    """Triton version of `moe_ref`; returns a new [N, d] tensor in h's dtype. No host sync.
    config: tiles and launch options (None: `moe_config`)."""
    assert h.dim() == 2 and w_gate_up.dim() == 3 and w_down.dim() == 3, "h [N, d], w [E, ., .]"
    num_tokens, dim = h.shape
    num_experts, inter = w_down.shape[0], w_down.shape[2]
    assert w_gate_up.shape == (num_experts, 2 * inter, dim), f"w_gate_up {tuple(w_gate_up.shape)}"
    assert w_down.shape == (num_experts, dim, inter), f"w_down {tuple(w_down.shape)}"
    assert experts.dim() == 2 and experts.shape[0] == num_tokens and weights.shape == experts.shape
    assert not experts.is_floating_point(), "experts must be integer ids"
    assert h.dtype == w_gate_up.dtype == w_down.dtype, "h and the expert weights must share a dtype"
    assert h.dtype in (torch.float32, torch.float16, torch.bfloat16), h.dtype
    assert h.stride(1) == 1 and w_gate_up.stride(2) == 1 and w_down.stride(2) == 1, "unit stride along d, I"
    assert h.device == w_gate_up.device == w_down.device == weights.device == experts.device
    top_k = experts.shape[1]
    num_slots = num_tokens * top_k
    if num_slots == 0:
        return torch.zeros_like(h)
    cfg = moe_config(num_slots, num_experts, h.dtype) if config is None else config
    slot_ids, block_expert = align_by_expert(experts, num_experts, cfg.block_m)
    act = torch.empty((num_slots, inter), dtype=h.dtype, device=h.device)
    _launch_gemm(h, w_gate_up, act, act, slot_ids, block_expert, top_k, True, cfg)
    route_w = weights.to(h.dtype).contiguous()
    y = torch.empty((num_slots, dim), dtype=h.dtype, device=h.device)
    _launch_gemm(act, w_down, y, route_w, slot_ids, block_expert, top_k, False, cfg)
    return y.view(num_tokens, top_k, dim).sum(1, dtype=torch.float32).to(h.dtype)


def _launch_gemm(x, w, out, route_w, slot_ids, block_expert, top_k, gated, cfg: MoeConfig) -> None:
    """One launch of `_moe_gemm_kernel` over every block of `slot_ids` (route_w unused when gated)."""
    n_out = out.shape[1]
    grid = (block_expert.shape[0], triton.cdiv(n_out, cfg.block_n))
    _moe_gemm_kernel[grid](
        x,
        w,
        out,
        route_w,
        slot_ids,
        block_expert,
        out.shape[0],
        top_k,
        n_out,
        x.shape[1],
        x.stride(0),
        w.stride(0),
        w.stride(1),
        GATED=gated,
        BLOCK_M=cfg.block_m,
        BLOCK_N=cfg.block_n,
        BLOCK_K=cfg.block_k,
        UPCAST=INTERPRET,
        DOT_PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
