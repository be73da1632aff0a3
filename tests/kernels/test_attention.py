"""Packed varlen attention launcher against `attention_ref` (small shapes, GQA, cache + fresh block)."""

import pytest
import torch

from kernels.attention import LaunchConfig, attention, attention_ref, choose_num_splits, launch_config

pytestmark = [
    pytest.mark.interpreter,
    pytest.mark.filterwarnings("ignore:Conversion of an array with ndim:DeprecationWarning"),
]

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _cu(lengths, device):
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    return torch.tensor(cu, dtype=torch.int32, device=device)


def _run(
    device,
    tolerance,
    dtype,
    q_lens,
    k_lens,
    num_heads,
    num_kv_heads,
    head_dim,
    scale=None,
    num_splits=None,
    config=None,
):
    cu_q, cu_k = _cu(q_lens, device), _cu(k_lens, device)
    q = torch.randn(sum(q_lens), num_heads, head_dim, device=device).to(dtype)
    k = torch.randn(sum(k_lens), num_kv_heads, head_dim, device=device).to(dtype)
    v = torch.randn(sum(k_lens), num_kv_heads, head_dim, device=device).to(dtype)
    out = attention(q, k, v, cu_q, cu_k, scale, num_splits=num_splits, config=config)
    ref_low = attention_ref(q, k, v, cu_q, cu_k, scale)
    ref_fp32 = attention_ref(q.float(), k.float(), v.float(), cu_q, cu_k, scale)
    tolerance(
        f"attention q{q_lens} k{k_lens} H{num_heads}/{num_kv_heads} D{head_dim} splits {num_splits} {config}",
        out,
        ref_low,
        ref_fp32,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "q_lens,k_lens,num_heads,num_kv_heads,head_dim",
    [
        ([7], [7], 2, 2, 64),  # self-attention, one short sequence
        ([5, 19, 3], [5, 19, 3], 4, 2, 64),  # GQA, several lengths
        ([8, 8, 8], [8 + 40, 8 + 3, 8 + 71], 2, 1, 128),  # cached segment + fresh block, MQA
        ([33, 4], [33 + 100, 4 + 9], 3, 3, 40),  # q block spans two tiles; head_dim not a power of 2
    ],
)
def test_attention(device, tolerance, dtype, q_lens, k_lens, num_heads, num_kv_heads, head_dim):
    _run(device, tolerance, dtype, q_lens, k_lens, num_heads, num_kv_heads, head_dim)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_splits", [2, 5])
def test_attention_split_keys(device, tolerance, dtype, num_splits):
    """Keys split across programs and merged: long, short (some splits get no keys) and empty key
    ranges in one batch."""
    _run(device, tolerance, dtype, [8, 8, 3, 0], [8 + 200, 8 + 3, 3 + 70, 0], 4, 2, 64, num_splits=num_splits)


@pytest.mark.parametrize(
    "config",
    [
        LaunchConfig(block_m=16, block_n=128, block_d=64, block_b=16, num_warps=8, num_stages=3),
        LaunchConfig(block_m=64, block_n=32, block_d=64, block_b=32, num_warps=4, num_stages=1),
    ],
)
def test_attention_other_tiles(device, tolerance, config):
    """Tiles other than `launch_config`'s (what benchmarks sweep) give the same result."""
    _run(device, tolerance, torch.bfloat16, [5, 40, 3], [5 + 150, 40 + 7, 3], 4, 2, 64, config=config)


def test_launch_config():
    bf16, fp32 = torch.bfloat16, torch.float32
    # a 32-token block per sequence (cached step) vs a whole canvas (exact step), LLaDA-8B head_dim
    assert launch_config(8 * 32, 8, 128, bf16) == LaunchConfig(
        block_m=32, block_n=64, block_d=128, block_b=16
    )
    assert launch_config(1024, 1, 128, bf16).block_m == 64
    assert launch_config(8, 1, 40, bf16).block_d == 64 and launch_config(8, 1, 40, bf16).block_m == 16
    wide = launch_config(64 * 1024, 64, 256, bf16)
    assert (wide.block_m, wide.block_n, wide.block_b, wide.num_warps) == (64, 32, 64, 8)
    # fp32: half the keys per step, 8 warps from 64 x 128 tiles, no 64-row tiles at head_dim 256
    assert launch_config(8 * 32, 8, 128, fp32) == LaunchConfig(32, 32, 128, 16, num_warps=4)
    assert launch_config(8 * 1024, 8, 128, fp32).num_warps == 8
    assert launch_config(1024, 1, 256, fp32).block_m == 32 and launch_config(1024, 1, 256, fp32).block_n == 16


def test_choose_num_splits():
    # batch 1, 32 heads, one 32-query block, 4096 keys on a 132-SM GPU: 8 splits of 512 keys
    assert choose_num_splits(32, 4096, 1, 32, 32, 132) == 8
    # short key ranges or a full GPU: no split; no GPU: no split
    assert choose_num_splits(32, 256, 1, 32, 32, 132) == 1
    assert choose_num_splits(64 * 32, 64 * 4096, 64, 32, 32, 132) == 1
    assert choose_num_splits(32, 4096, 1, 32, 32, 0) == 1
    # very long keys: capped at 16
    assert choose_num_splits(16, 1 << 20, 1, 1, 16, 132) == 16


def test_attention_empty_sequences_and_scale(device, tolerance):
    """Sequences with no queries (and one with no keys and no queries) take no output rows."""
    _run(device, tolerance, torch.float32, [0, 6, 0, 5], [9, 6 + 4, 0, 5], 2, 2, 64, scale=0.3)


def test_attention_strided_views(device, tolerance):
    """q, k, v as views into one fused QKV output [N, 3, H, D]."""
    lens = [6, 11]
    cu = _cu(lens, device)
    qkv = torch.randn(sum(lens), 3, 2, 64, device=device)
    q, k, v = qkv.unbind(1)
    ref = attention_ref(q, k, v, cu, cu)
    tolerance("attention strided", attention(q, k, v, cu, cu), ref, ref)


def test_attention_rejects_bad_inputs(device):
    q = torch.randn(4, 2, 64, device=device)
    k = torch.randn(4, 3, 64, device=device)
    cu = torch.tensor([0, 4], dtype=torch.int32, device=device)
    with pytest.raises(AssertionError):
        attention(q, k, k, cu, cu)  # 3 kv heads do not divide 2 heads
    with pytest.raises(AssertionError):
        attention(q, q, q, cu.long(), cu.long())
