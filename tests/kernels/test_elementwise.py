"""rms_norm, rotary and swiglu launchers against their torch references (small, odd shapes)."""

import pytest
import torch

from kernels.rms_norm import rms_norm, rms_norm_ref
from kernels.rotary import rotary, rotary_ref
from kernels.swiglu import swiglu, swiglu_ref

pytestmark = pytest.mark.interpreter

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_rows,dim", [(1, 64), (7, 100), (3, 4096)])
@pytest.mark.parametrize("with_residual", [False, True])
def test_rms_norm(device, tolerance, dtype, num_rows, dim, with_residual):
    x = torch.randn(num_rows, dim, device=device) * 3
    weight = 1 + 0.1 * torch.randn(dim, device=device)
    res = torch.randn(num_rows, dim, device=device) if with_residual else None
    low = [t.to(dtype) if t is not None else None for t in (x, weight, res)]
    high = [t.float() if t is not None else None for t in low]
    out = rms_norm(*low[:2], 1e-6, low[2])
    ref_low = rms_norm_ref(*low[:2], 1e-6, low[2])
    ref_fp32 = rms_norm_ref(*high[:2], 1e-6, high[2])
    if with_residual:
        tolerance("rms_norm.y", out[0], ref_low[0], ref_fp32[0])
        tolerance("rms_norm.sum", out[1], ref_low[1], ref_fp32[1])
    else:
        tolerance("rms_norm", out, ref_low, ref_fp32)


def test_rms_norm_strided_rows(device, tolerance):
    base = torch.randn(5, 2 * 96, device=device)
    x = base[:, 96:]  # row stride 192
    weight = torch.randn(96, device=device)
    out = rms_norm(x, weight, 1e-5)
    tolerance("rms_norm strided", out, rms_norm_ref(x, weight, 1e-5), rms_norm_ref(x, weight, 1e-5))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_tokens,num_heads,head_dim", [(5, 3, 64), (9, 17, 128), (4, 2, 40)])
def test_rotary(device, tolerance, dtype, num_tokens, num_heads, head_dim):
    max_pos = 50
    inv_freq = 1.0 / (500000.0 ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    angles = torch.arange(max_pos, device=device).float()[:, None] * inv_freq[None, :]
    cos, sin = angles.cos(), angles.sin()
    positions = torch.randint(0, max_pos, (num_tokens,), device=device)
    x = torch.randn(num_tokens, num_heads, head_dim, device=device).to(dtype)
    out = rotary(x, positions, cos, sin)
    tolerance("rotary", out, rotary_ref(x, positions, cos, sin), rotary_ref(x.float(), positions, cos, sin))


def test_rotary_strided_view(device, tolerance):
    """q as a view into a fused QKV projection output: token stride 3 * H * D."""
    num_tokens, num_heads, head_dim = 6, 4, 64
    qkv = torch.randn(num_tokens, 3, num_heads, head_dim, device=device)
    q = qkv[:, 1]
    angles = torch.rand(10, head_dim // 2, device=device) * 6
    positions = torch.tensor([0, 3, 9, 2, 2, 1], device=device, dtype=torch.int32)
    ref = rotary_ref(q, positions.long(), angles.cos(), angles.sin())
    tolerance("rotary strided", rotary(q, positions, angles.cos(), angles.sin()), ref, ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_rows,num_cols", [(1, 16), (7, 300), (3, 2500)])
def test_swiglu(device, tolerance, dtype, num_rows, num_cols):
    gate = (torch.randn(num_rows, num_cols, device=device) * 4).to(dtype)
    up = torch.randn(num_rows, num_cols, device=device).to(dtype)
    out = swiglu(gate, up)
    tolerance("swiglu", out, swiglu_ref(gate, up), swiglu_ref(gate.float(), up.float()))


def test_swiglu_fused_halves(device, tolerance):
    fused = torch.randn(5, 2 * 200, device=device)
    gate, up = fused.chunk(2, dim=-1)
    ref = swiglu_ref(gate, up)
    tolerance("swiglu halves", swiglu(gate, up), ref, ref)


def test_launchers_reject_bad_inputs(device):
    x = torch.randn(4, 8, device=device)
    with pytest.raises(AssertionError):
        rms_norm(x, torch.ones(9, device=device), 1e-5)
    with pytest.raises(AssertionError):
        swiglu(x, x.half())
    with pytest.raises(AssertionError):
        swiglu(x.t(), x.t())  # not unit stride along h
    with pytest.raises(AssertionError):
        rotary(
            torch.randn(2, 2, 7, device=device),
            torch.zeros(2, dtype=torch.long, device=device),
            torch.ones(4, 3, device=device),
            torch.ones(4, 3, device=device),
        )
