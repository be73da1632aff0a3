"""Paged attention launcher against `paged_attention_ref`, and that reference against `attention_ref`.

Every case scatters each row's pages over the pool out of order, leaves spare pool pages that no row
names, and fills everything no row's keys occupy (spare pages, the tail of each row's last page) with
NaN; page-table entries past a row's pages hold a huge index or a spare page. A kernel that reads
any of it returns NaN or wrong values.
"""

import pytest
import torch

from kernels.attention import (
    LaunchConfig,
    attention_ref,
    launch_config,
    paged_attention,
    paged_attention_ref,
)
from kernels.ops import TorchOps, TritonOps

pytestmark = [
    pytest.mark.interpreter,
    pytest.mark.filterwarnings("ignore:Conversion of an array with ndim:DeprecationWarning"),
]

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
HUGE_PAGE = 2**31 - 1  # a page index far past any pool


def _cu(lengths, device):
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)


def _layout(kv_lens, page_size, device, spare_pages=3, spare_columns=2):
    """(page_table [B, P] int32, kv_lens [B] int32, is_used [num_pages * page_size] bool).

    Pages are dealt to rows in a shuffled order; `spare_pages` are named by no row. Each row's table
    has `spare_columns` (or more) entries past its pages: a huge index, then spare pages. The table is
    a column slice of a wider one (row stride != P), as an engine's persistent table would be."""
    counts = [-(-n // page_size) for n in kv_lens]
    order = torch.randperm(sum(counts) + spare_pages).tolist()
    spare = order[sum(counts) :]
    width = max(counts) + spare_columns
    table = torch.full((len(kv_lens), width + 3), -7, dtype=torch.int32)
    is_used = torch.zeros(len(order) * page_size, dtype=torch.bool)
    taken = 0
    for b, (num_keys, count) in enumerate(zip(kv_lens, counts, strict=True)):
        pages = order[taken : taken + count]
        taken += count
        tail = [HUGE_PAGE] + [spare[j % spare_pages] for j in range(width - count - 1)]
        table[b, :width] = torch.tensor(pages + tail, dtype=torch.int32)
        for j in range(num_keys):
            is_used[pages[j // page_size] * page_size + j % page_size] = True
    lens = torch.tensor(kv_lens, dtype=torch.int32, device=device)
    return table.to(device)[:, :width], lens, is_used.to(device)


def _pool(is_used, num_kv_heads, head_dim, dtype):
    """[S, Hkv, D] random keys or values; NaN in every slot no row's keys occupy."""
    pool = torch.randn(is_used.shape[0], num_kv_heads, head_dim, device=is_used.device)
    pool[~is_used] = float("nan")
    return pool.to(dtype)


def _run(
    device,
    tolerance,
    dtype,
    q_lens,
    kv_lens,
    num_heads,
    num_kv_heads,
    head_dim,
    page_size,
    scale=None,
    num_splits=None,
    config=None,
):
    table, lens, is_used = _layout(kv_lens, page_size, device)
    cu_q = _cu(q_lens, device)
    q = torch.randn(sum(q_lens), num_heads, head_dim, device=device).to(dtype)
    k_cache = _pool(is_used, num_kv_heads, head_dim, dtype)
    v_cache = _pool(is_used, num_kv_heads, head_dim, dtype)
    args = (cu_q, table, lens, page_size, scale)
    out = paged_attention(q, k_cache, v_cache, *args, num_splits=num_splits, config=config)
    ref_low = paged_attention_ref(q, k_cache, v_cache, *args)
    ref_fp32 = paged_attention_ref(q.float(), k_cache.float(), v_cache.float(), *args)
    tolerance(
        f"paged_attention q{q_lens} kv{kv_lens} page {page_size} H{num_heads}/{num_kv_heads} D{head_dim} "
        f"splits {num_splits} {config}",
        out,
        ref_low,
        ref_fp32,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "q_lens,kv_lens,num_heads,num_kv_heads,head_dim,page_size",
    [
        # GQA; kv lens not page multiples, the last row a single partial page
        ([8, 5, 3], [50, 17, 5], 4, 2, 64, 16),
        ([4, 6], [33, 64], 2, 1, 128, 16),  # MQA; a row of exactly 4 pages
        ([3, 2], [20, 7], 2, 2, 256, 8),  # head_dim 256; 8-key pages
        ([20, 3], [70, 9], 2, 2, 40, 64),  # pages wider than a K/V tile; head_dim not a power of 2
    ],
)
def test_paged_attention(
    device, tolerance, dtype, q_lens, kv_lens, num_heads, num_kv_heads, head_dim, page_size
):
    _run(device, tolerance, dtype, q_lens, kv_lens, num_heads, num_kv_heads, head_dim, page_size)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_splits", [2, 5])
def test_paged_attention_split_keys(device, tolerance, dtype, num_splits):
    """Keys split across programs and merged: a long row, a short one (some splits get no keys), and
    a row with keys but no queries in one batch."""
    _run(device, tolerance, dtype, [8, 8, 0], [200, 11, 40], 4, 2, 64, 16, num_splits=num_splits)


def test_paged_attention_other_tiles_and_scale(device, tolerance):
    """Tiles other than `launch_config`'s (what benchmarks sweep), and a given scale."""
    config = LaunchConfig(block_m=16, block_n=128, block_d=64, block_b=16, num_warps=8, num_stages=2)
    _run(device, tolerance, torch.bfloat16, [5, 3], [150, 3], 2, 1, 64, 16, scale=0.3, config=config)


def test_paged_attention_ref_matches_gathered_keys(device):
    """The reference equals `attention_ref` on keys gathered position by position through the table."""
    page_size, kv_lens, q_lens = 4, [9, 1, 12], [3, 2, 5]
    table, lens, is_used = _layout(kv_lens, page_size, device)
    k_cache, v_cache = _pool(is_used, 2, 16, torch.float32), _pool(is_used, 2, 16, torch.float32)
    slots = [
        int(table[b, j // page_size]) * page_size + j % page_size
        for b, n in enumerate(kv_lens)
        for j in range(n)
    ]
    q = torch.randn(sum(q_lens), 4, 16, device=device)
    cu_q, cu_k = _cu(q_lens, device), _cu(kv_lens, device)
    expected = attention_ref(q, k_cache[slots], v_cache[slots], cu_q, cu_k)
    out = paged_attention_ref(q, k_cache, v_cache, cu_q, table, lens, page_size)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_triton_ops_paged_attention_matches_torch_ops(device):
    table, lens, is_used = _layout([19, 6], 16, device)
    q = torch.randn(7, 2, 64, device=device)
    k_cache, v_cache = _pool(is_used, 2, 64, torch.float32), _pool(is_used, 2, 64, torch.float32)
    args = (q, k_cache, v_cache, _cu([4, 3], device), table.contiguous(), lens, 16)
    torch.testing.assert_close(TritonOps().paged_attention(*args), TorchOps().paged_attention(*args))


def test_paged_launch_config():
    """Paged launches take 3 stages (page-table entries prefetched by cp.async); tiles as unpaged."""
    unpaged = launch_config(8 * 32, 8, 128, torch.bfloat16)
    paged = launch_config(8 * 32, 8, 128, torch.bfloat16, paged=True)
    assert (unpaged.num_stages, paged.num_stages) == (2, 3)
    assert (paged.block_m, paged.block_n, paged.block_d, paged.num_warps) == (32, 64, 128, 4)


def test_paged_attention_rejects_bad_inputs(device):
    table, lens, is_used = _layout([5], 4, device)
    q = torch.randn(2, 2, 16, device=device)
    pool = _pool(is_used, 2, 16, torch.float32)
    cu = _cu([2], device)
    with pytest.raises(AssertionError, match="power of two"):
        paged_attention(q, pool, pool, cu, table, lens, 6)
    with pytest.raises(AssertionError, match="page_table"):
        paged_attention(q, pool, pool, cu, table.long(), lens, 4)
    with pytest.raises(AssertionError, match="kv_lens"):
        paged_attention(q, pool, pool, cu, table, lens.repeat(2), 4)
    with pytest.raises(AssertionError, match="page_table must be"):
        paged_attention(q, pool, pool, _cu([1, 1], device), table, lens, 4)
