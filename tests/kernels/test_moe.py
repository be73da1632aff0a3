"""MoE routing and the grouped expert MLP: references restated, the Triton path against `moe_ref`.

Small shapes with odd sizes (d 72, I 40: neither a multiple of a tile), routings built to hit the
alignment's corners: uneven loads, experts nobody chose, every token on one expert, top-k 1 and 8,
one token, slot counts that fill 16-, 32- and 64-slot blocks partly.
"""

import pytest
import torch
import torch.nn.functional as F

from kernels.moe import align_by_expert, grouped_moe, max_blocks, moe_config, moe_ref, route_ref
from kernels.ops import TorchOps, TritonOps

pytestmark = pytest.mark.interpreter

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DIM, INTER = 72, 40


def expert_weights(num_experts, dim=DIM, inter=INTER, device="cpu"):
    """(w_gate_up [E, 2I, d], w_down [E, d, I]) fp32, scaled so outputs stay O(1)."""
    w_gate_up = torch.randn(num_experts, 2 * inter, dim, device=device) / dim**0.5
    w_down = torch.randn(num_experts, dim, inter, device=device) / inter**0.5
    return w_gate_up, w_down


def skewed_routing(num_tokens, num_experts, top_k, device, allowed=None):
    """(weights [N, k] fp32, experts [N, k] int64): k distinct experts per token, expert e drawn with
    odds 2^-e (uneven loads), or 0 unless in `allowed` (experts nobody chooses)."""
    odds = 0.5 ** torch.arange(num_experts, dtype=torch.float32, device=device)
    if allowed is not None:
        odds = odds * torch.zeros_like(odds).index_fill_(0, torch.tensor(allowed, device=device), 1.0)
    experts = torch.multinomial(odds.expand(num_tokens, -1), top_k, replacement=False)
    return torch.rand(num_tokens, top_k, device=device), experts


@pytest.mark.parametrize("top_k,with_bias", [(1, False), (8, False), (3, True)])
def test_route_ref_restated(device, top_k, with_bias):
    num_tokens, num_experts = 11, 16
    h = torch.randn(num_tokens, DIM, device=device)
    router_w = torch.randn(num_experts, DIM, device=device) / DIM**0.5
    bias = torch.randn(num_experts, device=device) * 0.1 if with_bias else None
    weights, experts = route_ref(h, router_w, top_k, bias)
    assert weights.dtype == torch.float32 and experts.dtype == torch.int64
    assert weights.shape == experts.shape == (num_tokens, top_k)
    for t in range(num_tokens):
        logits = [float(h[t].double() @ router_w[e].double()) for e in range(num_experts)]
        total = sum(torch.tensor(logits).double().exp().tolist())
        scores = [torch.tensor(x).double().exp().item() / total for x in logits]
        if with_bias:
            scores = [s + float(b) for s, b in zip(scores, bias, strict=True)]
        best = sorted(range(num_experts), key=lambda e: -scores[e])[:top_k]
        assert experts[t].tolist() == best
        torch.testing.assert_close(weights[t].double(), torch.tensor([scores[e] for e in best]).double())
    if not with_bias and top_k < num_experts:  # not renormalised
        assert bool((weights.sum(-1) < 1).all())


def test_moe_ref_matches_per_token_loop(device):
    num_tokens, num_experts, top_k = 7, 6, 3
    h = torch.randn(num_tokens, DIM, device=device)
    w_gate_up, w_down = expert_weights(num_experts, device=device)
    weights, experts = skewed_routing(num_tokens, num_experts, top_k, device)
    expected = torch.zeros(num_tokens, DIM, dtype=torch.float64, device=device)
    for t in range(num_tokens):
        for j in range(top_k):
            e = int(experts[t, j])
            gate_up = w_gate_up[e].double() @ h[t].double()
            act = F.silu(gate_up[:INTER]) * gate_up[INTER:]
            expected[t] += float(weights[t, j]) * (w_down[e].double() @ act)
    out = moe_ref(h, w_gate_up, w_down, weights, experts)
    assert out.dtype == h.dtype
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "num_tokens,num_experts,top_k,block_m", [(1, 8, 8, 16), (37, 8, 2, 16), (20, 5, 4, 32)]
)
def test_align_by_expert(device, num_tokens, num_experts, top_k, block_m):
    _, experts = skewed_routing(num_tokens, num_experts, top_k, device)
    slot_ids, block_expert = align_by_expert(experts, num_experts, block_m)
    num_slots = num_tokens * top_k
    num_blocks = max_blocks(num_slots, num_experts, block_m)
    assert slot_ids.dtype == block_expert.dtype == torch.int32
    assert slot_ids.shape == (num_blocks * block_m,) and block_expert.shape == (num_blocks,)
    real = slot_ids[slot_ids < num_slots]
    assert sorted(real.tolist()) == list(range(num_slots))  # every slot once
    assert bool((slot_ids[slot_ids >= num_slots] == num_slots).all())
    counts = torch.bincount(experts.flatten(), minlength=num_experts)
    used = int(((counts + block_m - 1) // block_m).sum())
    assert bool((block_expert[used:] == -1).all()) and bool((block_expert[:used] >= 0).all())
    blocks = slot_ids.view(num_blocks, block_m)
    for b in range(used):
        slots = blocks[b][blocks[b] < num_slots]
        assert slots.numel() > 0, f"block {b} of expert {int(block_expert[b])} is empty"
        assert bool((experts.flatten()[slots.long()] == block_expert[b]).all())
    assert block_expert[:used].tolist() == sorted(block_expert[:used].tolist())


ROUTINGS = {  # name: (num_tokens, num_experts, top_k, allowed experts)
    "one token top-8": (1, 8, 8, None),
    "uneven top-1": (19, 6, 1, None),
    "uneven top-2, empty experts": (37, 8, 2, [0, 1, 2, 3, 5]),
    "top-8 of 9, 32-slot blocks": (33, 9, 8, None),
    "top-4 of 5, 64-slot blocks": (90, 5, 4, None),
    "all tokens on expert 3": (21, 6, 1, [3]),
    "all tokens on experts 2, 4": (17, 6, 2, [2, 4]),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("routing", list(ROUTINGS))
def test_grouped_moe(device, tolerance, dtype, routing):
    num_tokens, num_experts, top_k, allowed = ROUTINGS[routing]
    h = torch.randn(num_tokens, DIM, device=device)
    w_gate_up, w_down = expert_weights(num_experts, device=device)
    weights, experts = skewed_routing(num_tokens, num_experts, top_k, device, allowed)
    low = [t.to(dtype) for t in (h, w_gate_up, w_down)]
    out = grouped_moe(*low, weights, experts)
    ref_low = moe_ref(*low, weights, experts)
    ref_fp32 = moe_ref(*(t.float() for t in low), weights.to(dtype).float(), experts)
    tolerance(f"grouped_moe {routing}", out, ref_low, ref_fp32)


def test_block_sizes_follow_the_load():
    assert [moe_config(n * 8, 64, torch.bfloat16).block_m for n in (1, 32, 256, 1024)] == [16, 16, 32, 64]
    assert [moe_config(n * k, e, torch.float32).block_m for n, e, k, _ in ROUTINGS.values()] == [
        16,
        16,
        16,
        32,
        64,
        16,
        16,
    ]


def test_grouped_moe_strided_tokens_and_ops_table(device):
    """h as a view with row stride 2d; the op tables agree."""
    num_experts = 4
    h = torch.randn(9, 2 * DIM, device=device)[:, DIM:]
    w_gate_up, w_down = expert_weights(num_experts, device=device)
    weights, experts = skewed_routing(9, num_experts, 2, device)
    ref = TorchOps().moe(h, w_gate_up, w_down, weights, experts)
    torch.testing.assert_close(TritonOps().moe(h, w_gate_up, w_down, weights, experts), ref)
    empty = grouped_moe(h[:0], w_gate_up, w_down, weights[:0], experts[:0])
    assert empty.shape == (0, DIM)


def test_launcher_rejects_bad_inputs(device):
    h = torch.randn(3, DIM, device=device)
    w_gate_up, w_down = expert_weights(4, device=device)
    weights, experts = skewed_routing(3, 4, 2, device)
    with pytest.raises(AssertionError):
        grouped_moe(h.half(), w_gate_up, w_down, weights, experts)  # dtypes differ
    with pytest.raises(AssertionError):
        grouped_moe(h, w_gate_up[:, :-1], w_down, weights, experts)  # not [E, 2I, d]
    with pytest.raises(AssertionError):
        grouped_moe(h, w_gate_up, w_down, weights, experts.float())
    with pytest.raises(AssertionError):
        grouped_moe(h, w_gate_up, w_down, weights[:, :1], experts)
