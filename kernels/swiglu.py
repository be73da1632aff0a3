"""SwiGLU activation: silu(gate) * up, elementwise (LLaDA: gate = ff_proj(h), up = up_proj(h)).

Kernel (`swiglu`): grid (rows, column blocks); silu and the product in fp32, one rounding at the
store (the reference rounds silu(gate) to the input dtype before the product, so the kernel is the
more accurate of the two in fp16/bf16). silu(g) = g / (1 + exp(-g)).
Limits: gate and up share shape [N, h] and dtype; unit stride along h, rows may be strided (e.g. the
two halves of a fused gate/up projection).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kernels._cast import INTERPRET, cast_rne


def swiglu_ref(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """gate, up: [N, h] of one dtype. Returns [N, h]."""
    return F.silu(gate) * up


@triton.jit
def _swiglu_kernel(
    GATE,  # [N, h]
    UP,  # [N, h]
    OUT,  # [N, h] contiguous
    NUM_COLS,
    STRIDE_G,
    STRIDE_U,
    BLOCK: tl.constexpr,
    INTERP: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < NUM_COLS
    g = tl.load(GATE + row * STRIDE_G + cols, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(UP + row * STRIDE_U + cols, mask=mask, other=0.0).to(tl.float32)
    out = g / (1.0 + tl.exp(-g)) * u
    tl.store(OUT + row * NUM_COLS + cols, cast_rne(out, OUT.dtype.element_ty, INTERP), mask=mask)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Triton version of `swiglu_ref`; returns a new contiguous [N, h] tensor."""
    assert gate.dim() == 2 and gate.shape == up.shape, f"{tuple(gate.shape)} vs {tuple(up.shape)}"
    assert gate.dtype == up.dtype and gate.dtype in (torch.float32, torch.float16, torch.bfloat16)
    assert gate.stride(1) == 1 and up.stride(1) == 1, "unit stride along h"
    num_rows, num_cols = gate.shape
    out = torch.empty((num_rows, num_cols), dtype=gate.dtype, device=gate.device)
    if out.numel() > 0:
        block = min(1024, triton.next_power_of_2(num_cols))
        grid = (num_rows, triton.cdiv(num_cols, block))
        _swiglu_kernel[grid](
            gate, up, out, num_cols, gate.stride(0), up.stride(0), BLOCK=block, INTERP=INTERPRET, num_warps=4
        )
    return out
