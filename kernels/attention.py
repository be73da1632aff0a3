"""Bidirectional (non-causal) attention over a packed variable-length batch, GQA aware.

Queries of B sequences are packed along one axis: sequence b owns rows
cu_seqlens_q[b]:cu_seqlens_q[b+1] of q, and attends to rows cu_seqlens_k[b]:cu_seqlens_k[b+1] of
k and v (its cached segments followed by its fresh block, already concatenated by the caller).
No mask inside a sequence. n_kv_heads divides n_heads: kv head j serves q heads j*g .. j*g+g-1.
Softmax in fp32; scale 1/sqrt(head_dim) unless given.

Reference (`attention_ref`, the CPU path): torch SDPA over query chunks of at most
MAX_CHUNK_SCORES // (heads x keys) queries against all of their sequence's keys, so that even SDPA's
math backend (which holds the [heads, queries, keys] scores) stays O(chunk x L), never O(L^2), on
long canvases (128K positions: UltraLLaDA). Each query row is computed alone, so chunking does not
change the result.

Kernel (`attention`): FlashAttention-2 style forward (Dao 2023): each program owns BLOCK_M queries of
one sequence and one q head, streams that sequence's keys in BLOCK_N tiles with an online softmax
(exp2, scale folded with log2 e), accumulates P @ V in fp32 and divides once at the end. P is rounded
to v's dtype before the P @ V product, as flash kernels do. The launch needs no host sync: the grid is
(cdiv(Nq, BLOCK_M) + B, H, NUM_SPLITS), an upper bound on the number of query blocks, and each
program finds its (sequence, query block) from a prefix sum of per-sequence block counts computed in
the kernel; the spare programs find empty ranges and store nothing.
Split keys (flash-decoding): a 32-query block of a single sequence gives only n_heads programs, far
fewer than the GPU has SMs, so when few programs would run and the key ranges are long
(`choose_num_splits`, from shapes only), each (query block, head) is also split over the key range into
NUM_SPLITS programs that write unnormalised fp32 partial sums with their running max and denominator;
`_combine_splits_kernel` rescales and merges them per (row, head).
Paged keys (`paged_attention`, the same kernel with PAGED set): row b's keys 0..kv_lens[b]-1 live in a
pool of pages (k_cache, v_cache [num_pages * page_size, Hkv, D]); key j at slot
page_table[b, j // page_size] * page_size + j % page_size. Each K/V tile loads the BLOCK_N page-table
entries of its positions (masked to j < kv_lens[b]) and gathers those pool rows; everything else (online
softmax, splits, combine) is shared. Page-table entries and pool slots past kv_lens[b] are never read.
Limits: B <= 4096 sequences; head_dim <= 256 (padded to a power of two); q, k, v of one dtype
(fp32, fp16, bf16) with unit stride along head_dim; fp32 inputs use IEEE fp32 dots, not TF32. A
sequence with queries and no keys gets zeros (the reference gives NaN). GQA programs re-read their kv
head once per q head (served by L2). Paged: page_size a power of two; kv_lens[b] <= P * page_size
and every page-table entry below it a valid page (neither is checked: that would need a host sync).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kernels import _device
from kernels._cast import INTERPRET, cast_rne

# Scores (queries x keys x heads) one SDPA call of the reference may hold: 256 MiB in fp32.
MAX_CHUNK_SCORES = 1 << 26


def _sdpa_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Bidirectional SDPA of q [B, H, Tq, D] over k, v [B, Hkv, Tk, D] in chunks of queries that
    each hold at most MAX_CHUNK_SCORES scores (at least one query per chunk). Returns [B, H, Tq, D]."""
    b, h = q.shape[:2]
    gqa = h != k.shape[1]
    chunk = max(1, MAX_CHUNK_SCORES // max(1, b * h * k.shape[2]))
    parts = [
        F.scaled_dot_product_attention(qc, k, v, is_causal=False, scale=scale, enable_gqa=gqa)
        for qc in q.split(chunk, dim=2)
    ]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)


def attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """q: [Nq, H, D]; k, v: [Nk, Hkv, D]; cu_seqlens_*: [B + 1] int. Returns [Nq, H, D] in q.dtype."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    lengths_q = cu_seqlens_q.diff()
    if torch.equal(cu_seqlens_q, cu_seqlens_k) and bool((lengths_q == lengths_q[0]).all()):
        # Equal-length sequences (training batches, uniform canvases): one batched call.
        b, t = lengths_q.numel(), int(lengths_q[0])
        qb = q.view(b, t, *q.shape[1:]).transpose(1, 2)  # [B, H, T, D]
        kb = k.view(b, t, *k.shape[1:]).transpose(1, 2)
        vb = v.view(b, t, *v.shape[1:]).transpose(1, 2)
        return _sdpa_chunked(qb, kb, vb, scale).transpose(1, 2).reshape(q.shape)
    out = torch.empty_like(q)
    bounds_q = cu_seqlens_q.tolist()
    bounds_k = cu_seqlens_k.tolist()
    for b in range(len(bounds_q) - 1):
        qs, qe, ks, ke = bounds_q[b], bounds_q[b + 1], bounds_k[b], bounds_k[b + 1]
        if qe == qs:
            continue
        # [1, H, T, D] views: SDPA's CPU path is ~3x slower on the same data as [H, T, D].
        qb = q[None, qs:qe].transpose(1, 2)
        kb = k[None, ks:ke].transpose(1, 2)
        vb = v[None, ks:ke].transpose(1, 2)
        out[qs:qe] = _sdpa_chunked(qb, kb, vb, scale)[0].transpose(0, 1)
    return out


def paged_slots(page_table: torch.Tensor, lengths: torch.Tensor, page_size: int) -> torch.Tensor:
    """Pool slots of positions 0..lengths[b]-1 of every row, row after row: [sum(lengths)] int64.
    Position j of row b lives at slot page_table[b, j // page_size] * page_size + j % page_size."""
    width = page_table.shape[1] * page_size
    pos = torch.arange(width, device=page_table.device)
    slots = page_table.long().repeat_interleave(page_size, dim=1) * page_size + pos % page_size
    return slots[pos[None, :] < lengths[:, None].long()]


def write_kv(
    k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor
) -> None:
    """k_cache[slots] = k, v_cache[slots] = v in place. caches [S, Hkv, D]; k, v [N, Hkv, D];
    slots [N] int64. One scatter per tensor, no host sync (so it can sit inside a CUDA graph)."""
    k_cache.index_copy_(0, slots, k)
    v_cache.index_copy_(0, slots, v)


def paged_attention_ref(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    page_table: torch.Tensor,
    kv_lens: torch.Tensor,
    page_size: int,
    scale: float | None = None,
) -> torch.Tensor:
    """Queries packed as in `attention_ref`; row b attends to keys 0..kv_lens[b]-1 held in the pool
    (k_cache, v_cache [num_pages * page_size, Hkv, D]) at the slots its page_table row [B, P] int32
    names (see `paged_slots`). Pages a row does not name are never read. Returns [Nq, H, D]."""
    slots = paged_slots(page_table, kv_lens, page_size)
    cu_k = torch.zeros_like(cu_seqlens_q)
    cu_k[1:] = kv_lens.cumsum(0)
    k, v = k_cache.index_select(0, slots), v_cache.index_select(0, slots)
    return attention_ref(q, k, v, cu_seqlens_q, cu_k, scale)


@triton.jit
def _attention_kernel(
    Q,  # [Nq, H, D]
    K,  # [Nk, Hkv, D]
    V,  # [Nk, Hkv, D]
    OUT,  # [Nq, H, D] contiguous; with splits: fp32 partial sums [S, Nq, H, D]
    ML,  # with splits: fp32 [S, Nq, H, 2] running max (log2 domain) and denominator; else unused
    CU_Q,  # [B + 1] int32
    KEY_BOUNDS,  # [B + 1] int32 key offsets (cu_seqlens_k); PAGED: [B] int32 keys per row (kv_lens)
    PAGE_TABLE,  # PAGED: [B, P] int32 pool pages of each row, unit stride along P; else unused
    STRIDE_PT,  # PAGED: page_table.stride(0)
    NUM_SEQS,
    NUM_ROWS,  # Nq
    HEAD_DIM,
    QK_SCALE,  # softmax scale * log2(e)
    STRIDE_QN,
    STRIDE_QH,
    STRIDE_KN,
    STRIDE_KH,
    STRIDE_VN,
    STRIDE_VH,
    NUM_HEADS: tl.constexpr,
    GROUP: tl.constexpr,  # q heads per kv head
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_B: tl.constexpr,  # >= NUM_SEQS, power of two
    UPCAST: tl.constexpr,  # interpreter: compute in fp32 (bf16 arithmetic is not emulated)
    DOT_PRECISION: tl.constexpr,
    NUM_SPLITS: tl.constexpr,  # key ranges split across this many programs (1: normalise and store)
    PAGED: tl.constexpr,  # keys gathered from pool pages through PAGE_TABLE (else rows of K, V)
    PAGE_SIZE: tl.constexpr,  # PAGED: keys per page, a power of two
):
    pid = tl.program_id(0)
    head = tl.program_id(1)
    split = tl.program_id(2)
    # Which (sequence, query block) is this program? Blocks are numbered sequence by sequence.
    seq_ids = tl.arange(0, BLOCK_B)
    seq_valid = seq_ids < NUM_SEQS
    starts = tl.load(CU_Q + seq_ids, mask=seq_valid, other=0)
    ends = tl.load(CU_Q + seq_ids + 1, mask=seq_valid, other=0)
    num_blocks = (ends - starts + BLOCK_M - 1) // BLOCK_M
    blocks_end = tl.cumsum(num_blocks, 0)  # inclusive prefix sum
    seq = tl.sum((blocks_end <= pid).to(tl.int32), 0)
    is_real = seq < NUM_SEQS  # spare programs get empty query and key ranges below
    pick = seq_ids == seq
    q_start = tl.sum(tl.where(pick, starts, 0), 0)
    q_end = tl.sum(tl.where(pick, ends, 0), 0)
    block = pid - tl.sum(tl.where(pick, blocks_end - num_blocks, 0), 0)
    if PAGED:  # keys 0..kv_lens[seq]-1, positions within the row (mapped to pool slots below)
        k_start = 0
        k_end = tl.load(KEY_BOUNDS + seq, mask=is_real, other=0)
        pages_of_seq = PAGE_TABLE + seq.to(tl.int64) * STRIDE_PT
    else:  # keys are rows cu_k[seq]..cu_k[seq+1]-1 of K and V
        k_start = tl.load(KEY_BOUNDS + seq, mask=is_real, other=0)
        k_end = tl.load(KEY_BOUNDS + seq + 1, mask=is_real, other=0)
    if NUM_SPLITS > 1:  # this program takes one BLOCK_N-aligned share of the sequence's keys
        share = tl.cdiv(tl.cdiv(k_end - k_start, NUM_SPLITS), BLOCK_N) * BLOCK_N
        k_start = k_start + split * share
        k_end = tl.minimum(k_start + share, k_end)

    rows = q_start + block * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < q_end
    dims = tl.arange(0, BLOCK_D)
    dim_mask = dims < HEAD_DIM
    rows64 = rows.to(tl.int64)
    q = tl.load(
        Q + rows64[:, None] * STRIDE_QN + head * STRIDE_QH + dims[None, :],
        mask=row_mask[:, None] & dim_mask[None, :],
        other=0.0,
    )
    if UPCAST:
        q = q.to(tl.float32)
    kv_head = head // GROUP
    m_i = tl.full((BLOCK_M,), -1.0e30, tl.float32)  # finite: no (-inf) - (-inf)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    cols_base = tl.arange(0, BLOCK_N)
    for n_start in range(k_start, k_end, BLOCK_N):
        cols = n_start + cols_base
        col_mask = cols < k_end
        if PAGED:  # masked: entries past kv_lens[seq] may be garbage
            pages = tl.load(pages_of_seq + cols // PAGE_SIZE, mask=col_mask, other=0)
            key_rows = pages.to(tl.int64) * PAGE_SIZE + cols % PAGE_SIZE
        else:
            key_rows = cols.to(tl.int64)
        kt = tl.load(  # [BLOCK_D, BLOCK_N]
            K + key_rows[None, :] * STRIDE_KN + kv_head * STRIDE_KH + dims[:, None],
            mask=col_mask[None, :] & dim_mask[:, None],
            other=0.0,
        )
        v = tl.load(  # [BLOCK_N, BLOCK_D]
            V + key_rows[:, None] * STRIDE_VN + kv_head * STRIDE_VH + dims[None, :],
            mask=col_mask[:, None] & dim_mask[None, :],
            other=0.0,
        )
        if UPCAST:
            kt = kt.to(tl.float32)
        s = tl.dot(q, kt, input_precision=DOT_PRECISION) * QK_SCALE  # log2 domain
        s = tl.where(col_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        p = cast_rne(p, V.dtype.element_ty, UPCAST)
        if UPCAST:
            p = p.to(tl.float32)
            v = v.to(tl.float32)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=DOT_PRECISION)
        m_i = m_new
    if NUM_SPLITS > 1:  # unnormalised partials; _combine_splits_kernel merges them
        part = split.to(tl.int64) * NUM_ROWS + rows64
        tl.store(
            OUT + part[:, None] * (NUM_HEADS * HEAD_DIM) + head * HEAD_DIM + dims[None, :],
            acc,
            mask=row_mask[:, None] & dim_mask[None, :],
        )
        ml = ML + (part * NUM_HEADS + head) * 2
        tl.store(ml, m_i, mask=row_mask)
        tl.store(ml + 1, l_i, mask=row_mask)
    else:
        out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
        tl.store(
            OUT + rows64[:, None] * (NUM_HEADS * HEAD_DIM) + head * HEAD_DIM + dims[None, :],
            cast_rne(out, OUT.dtype.element_ty, UPCAST),
            mask=row_mask[:, None] & dim_mask[None, :],
        )


@triton.jit
def _combine_splits_kernel(
    PART,  # fp32 [S, Nq, H, D]
    ML,  # fp32 [S, Nq, H, 2]
    OUT,  # [Nq, H, D] contiguous
    NUM_ROWS,
    HEAD_DIM,
    NUM_HEADS: tl.constexpr,
    NUM_SPLITS: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """One (query row, head) per program: out = sum_s 2^(m_s - M) acc_s / sum_s 2^(m_s - M) l_s."""
    row = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    splits = tl.arange(0, BLOCK_S)
    split_mask = splits < NUM_SPLITS
    part = splits.to(tl.int64) * NUM_ROWS + row
    ml = ML + (part * NUM_HEADS + head) * 2
    m = tl.load(ml, mask=split_mask, other=-1.0e30)
    denoms = tl.load(ml + 1, mask=split_mask, other=0.0)
    w = tl.exp2(m - tl.max(m, 0))  # empty splits carry m = -1e30, l = 0, acc = 0
    dims = tl.arange(0, BLOCK_D)
    dim_mask = dims < HEAD_DIM
    acc = tl.load(
        PART + part[:, None] * (NUM_HEADS * HEAD_DIM) + head * HEAD_DIM + dims[None, :],
        mask=split_mask[:, None] & dim_mask[None, :],
        other=0.0,
    )
    denom = tl.sum(w * denoms, 0)
    out = tl.sum(w[:, None] * acc, 0) / tl.where(denom == 0.0, 1.0, denom)
    tl.store(
        OUT + row * (NUM_HEADS * HEAD_DIM) + head * HEAD_DIM + dims,
        cast_rne(out, OUT.dtype.element_ty, UPCAST),
        mask=dim_mask,
    )


@dataclass(frozen=True)
class LaunchConfig:
    """Tiles and launch options of `_attention_kernel`."""

    block_m: int  # queries per program
    block_n: int  # keys per loop step
    block_d: int  # head_dim padded to a power of two
    block_b: int  # sequences scanned to find a program's query block (power of two >= B)
    num_warps: int = 4
    num_stages: int = 2  # K/V tiles in flight (cp.async ring on sm_80+)


def launch_config(
    num_q: int, num_seqs: int, head_dim: int, dtype: torch.dtype, paged: bool = False
) -> LaunchConfig:
    """From shapes only (no host sync). BLOCK_M follows the average queries per sequence (a 32-token
    block fills a 32-row tile, a whole canvas takes 64); a K/V step is 64 keys (32 past head_dim 128)
    for 16-bit inputs and half that for fp32, whose IEEE dots hold more in registers; 8 warps where 4
    would spill. Paged launches take 3 stages: Triton then fetches each tile's page-table entries by
    cp.async two tiles ahead, where with 2 a blocking load of them precedes every K/V copy (and some
    fp32 tiles spill). Each choice compiles for sm_90 without spills (tests/kernels/compile_sm90.py)."""
    avg_q = triton.cdiv(num_q, max(1, num_seqs))
    block_d = max(16, triton.next_power_of_2(head_dim))
    block_m = 16 if avg_q <= 16 else (32 if avg_q <= 32 else 64)
    is_fp32 = dtype == torch.float32
    if is_fp32 and block_d > 128:
        block_m = min(block_m, 32)
    return LaunchConfig(
        block_m=block_m,
        block_n=(64 if block_d <= 128 else 32) // (2 if is_fp32 else 1),
        block_d=block_d,
        block_b=max(16, triton.next_power_of_2(num_seqs)),
        num_warps=8 if block_m * block_d >= (64 * 128 if is_fp32 else 64 * 256) else 4,
        num_stages=3 if paged else 2,
    )


def choose_num_splits(
    num_q: int, num_k: int, num_seqs: int, num_heads: int, block_m: int, sm_count: int
) -> int:
    """Split each sequence's keys across programs when the query blocks alone cannot fill the GPU:
    aim for about two programs per SM, each with at least 512 keys, at most 16 splits. Uses shapes
    only (average keys per sequence), so no host sync."""
    if num_seqs == 0:
        return 1
    programs = triton.cdiv(num_q, block_m) * num_heads
    return _device.splits_to_fill(programs, (num_k // num_seqs) // 512, sm_count)


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor) -> None:
    """The asserts both launchers share: shapes, dtypes, strides and devices of q, k, v, cu_seqlens_q."""
    assert q.dim() == 3 and k.dim() == 3 and v.dim() == 3, "q, k, v must be [N, heads, D]"
    assert k.shape == v.shape and k.shape[2] == q.shape[2], f"{tuple(k.shape)} vs {tuple(v.shape)}"
    assert q.shape[1] % k.shape[1] == 0, "n_kv_heads must divide n_heads"
    assert q.dtype == k.dtype == v.dtype, "q, k, v must share a dtype"
    assert q.dtype in (torch.float32, torch.float16, torch.bfloat16), q.dtype
    assert q.stride(2) == 1 and k.stride(2) == 1 and v.stride(2) == 1, "unit stride along D"
    assert q.shape[2] <= 256, f"head_dim <= 256, got {q.shape[2]}"
    assert cu_seqlens_q.dim() == 1 and cu_seqlens_q.dtype == torch.int32, "cu_seqlens_q must be int32 [B+1]"
    assert cu_seqlens_q.is_contiguous()
    assert cu_seqlens_q.device == q.device == k.device == v.device
    assert 0 <= cu_seqlens_q.shape[0] - 1 <= 4096


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    scale: float | None = None,
    num_splits: int | None = None,
    config: LaunchConfig | None = None,
) -> torch.Tensor:
    """Triton version of `attention_ref`; returns a new contiguous [Nq, H, D] tensor. No host sync.

    num_splits: key-range splits per (query block, head) (None: `choose_num_splits` on the device's
    SM count; 1 on CPU). With more than one, partial results go to an fp32 workspace and a second
    kernel merges them. config: tiles and launch options (None: `launch_config`); benchmarks sweep it.
    """
    _check_qkv(q, k, v, cu_seqlens_q)
    assert cu_seqlens_q.shape == cu_seqlens_k.shape, "cu_seqlens_q and cu_seqlens_k must both be [B+1]"
    assert cu_seqlens_k.dtype == torch.int32 and cu_seqlens_k.is_contiguous(), "cu_seqlens_k: int32"
    assert cu_seqlens_k.device == q.device
    return _launch(q, k, v, cu_seqlens_q, cu_seqlens_k, k.shape[0], scale, num_splits, config)


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    page_table: torch.Tensor,
    kv_lens: torch.Tensor,
    page_size: int,
    scale: float | None = None,
    num_splits: int | None = None,
    config: LaunchConfig | None = None,
) -> torch.Tensor:
    """Triton version of `paged_attention_ref`; returns a new contiguous [Nq, H, D] tensor. No host sync.

    k_cache, v_cache: the pool [num_pages * page_size, Hkv, D]; page_table [B, P] int32 (unit stride
    along P); kv_lens [B] int32, each at most P * page_size (not checked). num_splits and config as in
    `attention`; the split choice takes P * page_size keys per row, the most the table can name (the
    real lengths would need a host sync), so rows much shorter than their table may get more splits
    than they need: the spare ones find empty key ranges.
    """
    _check_qkv(q, k_cache, v_cache, cu_seqlens_q)
    num_seqs = cu_seqlens_q.shape[0] - 1
    assert page_table.dim() == 2 and page_table.shape[0] == num_seqs, "page_table must be [B, P]"
    assert page_table.dtype == torch.int32 and page_table.stride(1) == 1, "page_table: int32, unit stride"
    assert kv_lens.shape == (num_seqs,) and kv_lens.dtype == torch.int32, "kv_lens must be int32 [B]"
    assert kv_lens.is_contiguous() and page_table.device == kv_lens.device == q.device
    assert page_size > 0 and page_size & (page_size - 1) == 0, (
        f"page_size must be a power of two: {page_size}"
    )
    max_keys = num_seqs * page_table.shape[1] * page_size
    return _launch(
        q, k_cache, v_cache, cu_seqlens_q, kv_lens, max_keys, scale, num_splits, config, page_table, page_size
    )


def _launch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    key_bounds: torch.Tensor,
    num_k: int,
    scale: float | None,
    num_splits: int | None,
    config: LaunchConfig | None,
    page_table: torch.Tensor | None = None,
    page_size: int = 1,
) -> torch.Tensor:
    """Launch `_attention_kernel` (then `_combine_splits_kernel` when split) on checked inputs.
    key_bounds: cu_seqlens_k [B + 1], or kv_lens [B] when page_table is given (keys in the pool).
    num_k: total keys, or an upper bound from shapes; it only feeds the split choice."""
    num_q, num_heads, head_dim = q.shape
    num_seqs = cu_seqlens_q.shape[0] - 1
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    out = torch.empty((num_q, num_heads, head_dim), dtype=q.dtype, device=q.device)
    if num_q == 0 or num_seqs == 0:
        return out
    paged = page_table is not None
    cfg = launch_config(num_q, num_seqs, head_dim, q.dtype, paged) if config is None else config
    assert cfg.block_d >= head_dim and cfg.block_b >= num_seqs, f"{cfg} too small for these shapes"
    if num_splits is None:
        num_splits = choose_num_splits(
            num_q, num_k, num_seqs, num_heads, cfg.block_m, _device.sm_count(q.device)
        )
    assert 1 <= num_splits <= 64, f"num_splits must be in 1..64, got {num_splits}"
    if num_splits > 1:
        target = torch.empty((num_splits, num_q, num_heads, head_dim), dtype=torch.float32, device=q.device)
        ml = torch.empty((num_splits, num_q, num_heads, 2), dtype=torch.float32, device=q.device)
    else:
        target, ml = out, out  # ml unused
    grid = (triton.cdiv(num_q, cfg.block_m) + num_seqs, num_heads, num_splits)
    _attention_kernel[grid](
        q,
        k,
        v,
        target,
        ml,
        cu_seqlens_q,
        key_bounds,
        page_table if paged else key_bounds,  # a stand-in when not PAGED: never read
        page_table.stride(0) if paged else 0,
        num_seqs,
        num_q,
        head_dim,
        scale * 1.4426950408889634,
        q.stride(0),
        q.stride(1),
        k.stride(0),
        k.stride(1),
        v.stride(0),
        v.stride(1),
        NUM_HEADS=num_heads,
        GROUP=num_heads // k.shape[1],
        BLOCK_M=cfg.block_m,
        BLOCK_N=cfg.block_n,
        BLOCK_D=cfg.block_d,
        BLOCK_B=cfg.block_b,
        UPCAST=INTERPRET,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        NUM_SPLITS=num_splits,
        PAGED=paged,
        PAGE_SIZE=page_size,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    if num_splits > 1:
        block_s = max(2, triton.next_power_of_2(num_splits))
        _combine_splits_kernel[(num_q, num_heads)](
            target,
            ml,
            out,
            num_q,
            head_dim,
            NUM_HEADS=num_heads,
            NUM_SPLITS=num_splits,
            BLOCK_S=block_s,
            BLOCK_D=cfg.block_d,
            UPCAST=INTERPRET,
            num_warps=max(1, min(4, block_s * cfg.block_d // 128)),  # 4 fp32 (16 bytes) per thread
        )
    return out
