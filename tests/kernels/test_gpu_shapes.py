"""GPU tier: the interpreter-tier checks again at LLaDA-8B shapes in bf16 (skipped without CUDA).

LLaDA-8B: d_model 4096, 32 heads x 128, MLP hidden 12288, vocab 126464; a cached denoising step of
B sequences has 32 query positions per sequence attending to 64..4096 keys (cache + fresh block), an
exact step has every canvas position as a query against the whole canvas (64-row tiles: wgmma on
Hopper, where the 32-query blocks use mma.sync). A dual-cache step reads its keys from 16-key pages
of a shared pool (paged attention). LLaDA-MoE: d_model 2048, 64 experts of 1024, top-8.
"""

import math

import pytest
import torch

from kernels.attention import attention, attention_ref, paged_attention, paged_attention_ref, paged_slots
from kernels.moe import grouped_moe, moe_ref, route_ref
from kernels.rms_norm import rms_norm, rms_norm_ref
from kernels.rotary import rotary, rotary_ref
from kernels.sampling_head import BLOCK_V, choose_head_splits, sample_head, sample_head_ref
from kernels.swiglu import swiglu, swiglu_ref

pytestmark = pytest.mark.gpu

BF16 = torch.bfloat16
VOCAB = 126464


@pytest.mark.parametrize("num_rows", [32, 2048])
def test_rms_norm_llada(cuda_device, tolerance, num_rows):
    x = torch.randn(num_rows, 4096, device=cuda_device).to(BF16)
    res = torch.randn(num_rows, 4096, device=cuda_device).to(BF16)
    w = (1 + 0.1 * torch.randn(4096, device=cuda_device)).to(BF16)
    y, h = rms_norm(x, w, 1e-5, res)
    y_low, h_low = rms_norm_ref(x, w, 1e-5, res)
    y_32, h_32 = rms_norm_ref(x.float(), w.float(), 1e-5, res.float())
    tolerance("rms_norm.y", y, y_low, y_32)
    tolerance("rms_norm.sum", h, h_low, h_32)


def test_swiglu_llada(cuda_device, tolerance):
    gate = (torch.randn(2048, 12288, device=cuda_device) * 3).to(BF16)
    up = torch.randn(2048, 12288, device=cuda_device).to(BF16)
    tolerance("swiglu", swiglu(gate, up), swiglu_ref(gate, up), swiglu_ref(gate.float(), up.float()))


def test_rotary_llada(cuda_device, tolerance):
    inv_freq = 1.0 / (500000.0 ** (torch.arange(0, 128, 2, device=cuda_device).float() / 128))
    angles = torch.arange(8192, device=cuda_device).float()[:, None] * inv_freq
    pos = torch.randint(0, 8192, (2048,), device=cuda_device)
    x = torch.randn(2048, 32, 128, device=cuda_device).to(BF16)
    cos, sin = angles.cos(), angles.sin()
    tolerance(
        "rotary", rotary(x, pos, cos, sin), rotary_ref(x, pos, cos, sin), rotary_ref(x.float(), pos, cos, sin)
    )


@pytest.mark.parametrize("num_seqs", [1, 8, 64])
@pytest.mark.parametrize("num_kv_heads", [32, 8])
def test_attention_llada(cuda_device, tolerance, num_seqs, num_kv_heads):
    """32 fresh queries per sequence; keys = a cached segment of 32..4064 positions + the block."""
    k_lens = torch.linspace(64, 4096, num_seqs).round().long().tolist() if num_seqs > 1 else [4096]
    q_lens = [32] * num_seqs
    cu_q = torch.tensor([0] + torch.tensor(q_lens).cumsum(0).tolist(), dtype=torch.int32, device=cuda_device)
    cu_k = torch.tensor([0] + torch.tensor(k_lens).cumsum(0).tolist(), dtype=torch.int32, device=cuda_device)
    q = torch.randn(sum(q_lens), 32, 128, device=cuda_device).to(BF16)
    k = torch.randn(sum(k_lens), num_kv_heads, 128, device=cuda_device).to(BF16)
    v = torch.randn(sum(k_lens), num_kv_heads, 128, device=cuda_device).to(BF16)
    out = attention(q, k, v, cu_q, cu_k)
    ref_low = attention_ref(q, k, v, cu_q, cu_k)
    ref_32 = attention_ref(q.float(), k.float(), v.float(), cu_q, cu_k)
    tolerance(f"attention B{num_seqs} Hkv{num_kv_heads}", out, ref_low, ref_32)


@pytest.mark.parametrize("canvases", [[4096], [256, 1031, 2048, 97]])
def test_attention_llada_canvas(cuda_device, tolerance, canvases):
    cu = torch.tensor([0] + torch.tensor(canvases).cumsum(0).tolist(), dtype=torch.int32, device=cuda_device)
    q, k, v = (torch.randn(sum(canvases), 32, 128, device=cuda_device).to(BF16) for _ in range(3))
    out = attention(q, k, v, cu, cu)
    ref_low = attention_ref(q, k, v, cu, cu)
    ref_32 = attention_ref(q.float(), k.float(), v.float(), cu, cu)
    tolerance(f"attention canvases {canvases}", out, ref_low, ref_32)


@pytest.mark.parametrize("num_seqs", [1, 8])
@pytest.mark.parametrize("max_keys", [320, 4096])
def test_paged_attention_llada(cuda_device, tolerance, num_seqs, max_keys):
    """Dual-cache step: 32 queries per row against its cached keys (prompt + answer canvas, up to
    `max_keys`, rows ragged and not page multiples) in 16-key pages scattered over a pool; pool slots
    no row uses are NaN."""
    page_size, pages = 16, max_keys // 16
    kv_lens = torch.tensor(
        [max_keys - 37 * b for b in range(num_seqs)], dtype=torch.int32, device=cuda_device
    )
    pool_pages = num_seqs * pages + 64
    table = torch.randperm(pool_pages, device=cuda_device)[: num_seqs * pages].view(num_seqs, pages).int()
    unused = torch.ones(pool_pages * page_size, dtype=torch.bool, device=cuda_device)
    unused[paged_slots(table, kv_lens, page_size)] = False
    k_cache, v_cache = (torch.randn(pool_pages * page_size, 32, 128, device=cuda_device) for _ in range(2))
    k_cache[unused] = v_cache[unused] = float("nan")
    k_cache, v_cache = k_cache.to(BF16), v_cache.to(BF16)
    q = torch.randn(32 * num_seqs, 32, 128, device=cuda_device).to(BF16)
    args = (
        torch.arange(0, 32 * num_seqs + 1, 32, dtype=torch.int32, device=cuda_device),
        table,
        kv_lens,
        page_size,
    )
    out = paged_attention(q, k_cache, v_cache, *args)
    ref_low = paged_attention_ref(q, k_cache, v_cache, *args)
    ref_32 = paged_attention_ref(q.float(), k_cache.float(), v_cache.float(), *args)
    tolerance(f"paged_attention B{num_seqs} keys <= {max_keys}", out, ref_low, ref_32)


@pytest.mark.parametrize("with_cfg", [False, True])
def test_sampling_head_greedy_llada(cuda_device, with_cfg):
    rows = 64
    logits = (torch.randn(rows, VOCAB, device=cuda_device) * 3).to(BF16)
    uncond = (torch.randn(rows, VOCAB, device=cuda_device) * 3).to(BF16) if with_cfg else None
    logits[:, 126081] = float("-inf")  # a banned EOS
    if with_cfg:
        uncond[:, 126081] = float("-inf")
    temp = torch.zeros(rows, device=cuda_device)
    seeds = torch.arange(rows, device=cuda_device)
    tokens, probs = sample_head(logits, temp, seeds, uncond, 1.0)
    ref_tokens, ref_probs = sample_head_ref(logits, temp, seeds, uncond, 1.0)
    assert tokens.tolist() == ref_tokens.tolist()
    torch.testing.assert_close(probs, ref_probs, rtol=5e-5, atol=1e-8)


@pytest.mark.parametrize("with_cfg", [False, True])
def test_sampling_head_split_rows_llada(cuda_device, with_cfg):
    """One sequence's 32-token block: the vocabulary split as the launcher chooses gives the tokens of
    one program per row, greedy and sampled."""
    rows = 32
    sms = torch.cuda.get_device_properties(cuda_device).multi_processor_count
    assert choose_head_splits(rows, VOCAB, BLOCK_V, sms) > 1  # the split path is what runs
    logits = (torch.randn(rows, VOCAB, device=cuda_device) * 3).to(BF16)
    uncond = (torch.randn(rows, VOCAB, device=cuda_device) * 3).to(BF16) if with_cfg else None
    temp = torch.tensor([0.0, 0.8] * (rows // 2), device=cuda_device)
    seeds = torch.arange(rows, device=cuda_device) + 7
    tokens, probs = sample_head(logits, temp, seeds, uncond, 1.0)
    one_tokens, one_probs = sample_head(logits, temp, seeds, uncond, 1.0, num_splits=1)
    assert tokens.tolist() == one_tokens.tolist()
    torch.testing.assert_close(probs, one_probs, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("temp", [1.0, 0.5])
def test_sampling_head_distribution_llada(cuda_device, temp):
    """65,536 draws over the full vocabulary, binned into 64 bins of equal probability mass."""
    draws, num_bins = 65536, 64
    row = torch.randn(VOCAB, device=cuda_device) * 2.0
    row[:1000] = float("-inf")
    target = torch.softmax(row.double() / temp, dim=-1)
    tokens, probs = sample_head(
        row.expand(draws, VOCAB),
        torch.full((draws,), temp, device=cuda_device),
        torch.arange(draws, device=cuda_device),
    )
    assert (tokens >= 1000).all() and (tokens < VOCAB).all()
    order = torch.argsort(target, descending=True)
    cum = target[order].cumsum(0)
    bin_of_rank = torch.clamp((cum * num_bins).floor().long(), max=num_bins - 1)  # equal-mass bins by rank
    bin_of_token = torch.empty(VOCAB, dtype=torch.long, device=cuda_device)
    bin_of_token[order] = bin_of_rank
    expected = torch.zeros(num_bins, dtype=torch.float64, device=cuda_device).index_add_(
        0, bin_of_rank, target[order]
    )
    observed = torch.bincount(bin_of_token[tokens], minlength=num_bins).double()
    keep = expected * draws >= 5
    stat = float(((observed[keep] - expected[keep] * draws) ** 2 / (expected[keep] * draws)).sum())
    dof = int(keep.sum()) - 1
    h = 2.0 / (9.0 * dof)
    critical = dof * (1.0 - h + 3.72 * math.sqrt(h)) ** 3  # p = 1e-4
    assert stat < critical, f"chi-square {stat:.1f} over {dof} dof (critical {critical:.1f})"
    torch.testing.assert_close(probs.double(), torch.softmax(row.double(), -1)[tokens], rtol=5e-5, atol=1e-12)


@pytest.mark.parametrize("num_tokens", [1, 256, 1024])
def test_moe_llada_moe(cuda_device, tolerance, num_tokens):
    """Routed by `route_ref` from a random router: 16-, 32- and 64-slot blocks."""
    h = torch.randn(num_tokens, 2048, device=cuda_device).to(BF16)
    w_gate_up = (torch.randn(64, 2048, 2048, device=cuda_device) / 2048**0.5).to(BF16)
    w_down = (torch.randn(64, 2048, 1024, device=cuda_device) / 1024**0.5).to(BF16)
    weights, experts = route_ref(h, torch.randn(64, 2048, device=cuda_device).to(BF16) / 45, 8)
    out = grouped_moe(h, w_gate_up, w_down, weights, experts)
    ref_low = moe_ref(h, w_gate_up, w_down, weights, experts)
    ref_fp32 = moe_ref(h.float(), w_gate_up.float(), w_down.float(), weights.to(BF16).float(), experts)
    tolerance("grouped_moe", out, ref_low, ref_fp32)
