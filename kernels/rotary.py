"""Rotary position embedding, half-split (`rotate_half`, GPT-NeoX) form, computed in fp32.

For a head vector x = [x1, x2] (halves of head_dim) at position p with angles a = p * inv_freq:
    out = [x1 * cos(a) - x2 * sin(a), x2 * cos(a) + x1 * sin(a)], cast back to x's dtype.
The cos/sin tables hold [max_position, head_dim // 2] fp32 values; positions index their rows.

Kernel (`rotary`): grid (tokens, head blocks); each program loads its token's position, the two
cos/sin rows, and a [BLOCK_H, BLOCK_HALF] tile of each half of its heads; rotates in fp32 and rounds
once at the store, as the reference does.
Limits: even head_dim <= 512; x may be strided over tokens and heads (e.g. a view into a fused QKV
output) but needs unit stride along head_dim; cos/sin contiguous fp32; positions must be < P
(not checked on the device).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._cast import INTERPRET, cast_rne


def rotary_ref(
    x: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> torch.Tensor:
    """x: [N, H, D]; positions: [N] int; cos, sin: [P, D // 2] fp32. Returns [N, H, D] in x.dtype."""
    half = x.shape[-1] // 2
    c = cos[positions].unsqueeze(1)  # [N, 1, D/2]
    s = sin[positions].unsqueeze(1)
    xf = x.float()
    x1, x2 = xf[..., :half], xf[..., half:]
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1).to(x.dtype)


@triton.jit
def _rotary_kernel(
    X,  # [N, H, D]
    POS,  # [N] int
    COS,  # [P, D/2] fp32
    SIN,  # [P, D/2] fp32
    OUT,  # [N, H, D] contiguous
    NUM_HEADS,
    HALF,
    STRIDE_XN,
    STRIDE_XH,
    BLOCK_H: tl.constexpr,
    BLOCK_HALF: tl.constexpr,
    INTERP: tl.constexpr,
):
    tok = tl.program_id(0).to(tl.int64)
    heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    cols = tl.arange(0, BLOCK_HALF)
    col_mask = cols < HALF
    pos = tl.load(POS + tok).to(tl.int64)
    c = tl.load(COS + pos * HALF + cols, mask=col_mask, other=0.0)[None, :]
    s = tl.load(SIN + pos * HALF + cols, mask=col_mask, other=0.0)[None, :]
    mask = (heads < NUM_HEADS)[:, None] & col_mask[None, :]
    x_ptr = X + tok * STRIDE_XN + heads[:, None] * STRIDE_XH + cols[None, :]
    x1 = tl.load(x_ptr, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x_ptr + HALF, mask=mask, other=0.0).to(tl.float32)
    o_ptr = OUT + tok * NUM_HEADS * 2 * HALF + heads[:, None] * 2 * HALF + cols[None, :]
    tl.store(o_ptr, cast_rne(x1 * c - x2 * s, OUT.dtype.element_ty, INTERP), mask=mask)
    tl.store(o_ptr + HALF, cast_rne(x2 * c + x1 * s, OUT.dtype.element_ty, INTERP), mask=mask)


def rotary(x: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Triton version of `rotary_ref`; returns a new contiguous [N, H, D] tensor."""
    assert x.dim() == 3, f"x must be [N, H, D], got {tuple(x.shape)}"
    num_tokens, num_heads, head_dim = x.shape
    assert head_dim % 2 == 0 and head_dim <= 512, f"even head_dim <= 512, got {head_dim}"
    assert x.dtype in (torch.float32, torch.float16, torch.bfloat16), x.dtype
    assert x.stride(2) == 1, "x must have unit stride along head_dim"
    assert positions.shape == (num_tokens,) and not positions.is_floating_point()
    assert positions.is_contiguous()
    half = head_dim // 2
    for table in (cos, sin):
        assert table.dim() == 2 and table.shape[1] == half, f"table must be [P, {half}]"
        assert table.dtype == torch.float32 and table.is_contiguous()
    assert cos.shape == sin.shape
    out = torch.empty((num_tokens, num_heads, head_dim), dtype=x.dtype, device=x.device)
    if out.numel() > 0:
        block_h = min(16, triton.next_power_of_2(num_heads))
        grid = (num_tokens, triton.cdiv(num_heads, block_h))
        _rotary_kernel[grid](
            x,
            positions,
            cos,
            sin,
            out,
            num_heads,
            half,
            x.stride(0),
            x.stride(1),
            BLOCK_H=block_h,
            BLOCK_HALF=triton.next_power_of_2(half),
            INTERP=INTERPRET,
            num_warps=4,
        )
    return out
