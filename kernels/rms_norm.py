"""RMSNorm, optionally fused with the residual add that precedes it.

Reference semantics (LLaDA's RMSLayerNorm): x is upcast to fp32, scaled by rsqrt(mean(x^2) + eps),
cast back to the input dtype, and only then multiplied by `weight`.
With `residual`, the input is `x + residual` (in the input dtype) and the sum is returned as well,
so a transformer block can carry it to its next residual add.

Kernel (`rms_norm`): one program per row, the whole row in one BLOCK_D tile (d <= 16384): load x
(and residual), add in fp32 and round to the input dtype (as torch does), sum of squares in fp32,
rsqrt, round the normalised row to the input dtype, multiply by weight in fp32, round again. Same
rounding points as the reference, so only the order of the fp32 sum differs.
Limits: x, residual, weight share one dtype (fp32/fp16/bf16); unit stride along d; rows may be strided.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels._cast import INTERPRET, cast_rne


def rms_norm_ref(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """x, residual: [N, d]; weight: [d]. Returns y, or (y, x + residual) when residual is given."""
    if residual is not None:
        x = x + residual
    xf = x.float()
    y = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight
    return (y, x) if residual is not None else y


@triton.jit
def _rms_norm_kernel(
    X,  # [N, d]
    RES,  # [N, d] (unused unless HAS_RESIDUAL)
    W,  # [d]
    Y,  # [N, d] out, contiguous
    H,  # [N, d] out x + residual, contiguous (unused unless HAS_RESIDUAL)
    D,
    STRIDE_X,
    STRIDE_R,
    EPS,
    HAS_RESIDUAL: tl.constexpr,
    BLOCK_D: tl.constexpr,
    INTERP: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    mask = cols < D
    x = tl.load(X + row * STRIDE_X + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(RES + row * STRIDE_R + cols, mask=mask, other=0.0)
        x = cast_rne(x.to(tl.float32) + r.to(tl.float32), X.dtype.element_ty, INTERP)  # like torch
        tl.store(H + row * D + cols, x, mask=mask)
    xf = x.to(tl.float32)
    inv_rms = tl.rsqrt(tl.sum(xf * xf, 0) / D + EPS)
    xn = cast_rne(xf * inv_rms, X.dtype.element_ty, INTERP).to(tl.float32)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row * D + cols, cast_rne(xn * w, Y.dtype.element_ty, INTERP), mask=mask)


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Triton version of `rms_norm_ref`; outputs are new contiguous tensors."""
    assert x.dim() == 2, f"x must be [N, d], got {tuple(x.shape)}"
    num_rows, dim = x.shape
    assert x.dtype in (torch.float32, torch.float16, torch.bfloat16), x.dtype
    assert weight.shape == (dim,) and weight.dtype == x.dtype and weight.is_contiguous()
    assert x.stride(1) == 1, "x must have unit stride along d"
    assert dim <= 16384, "one row per tile: d <= 16384"
    if residual is not None:
        assert residual.shape == x.shape and residual.dtype == x.dtype and residual.stride(1) == 1
    y = torch.empty((num_rows, dim), dtype=x.dtype, device=x.device)
    h = torch.empty_like(y) if residual is not None else y
    if num_rows > 0:
        block_d = triton.next_power_of_2(dim)
        _rms_norm_kernel[(num_rows,)](
            x,
            x if residual is None else residual,
            weight,
            y,
            h,
            dim,
            x.stride(0),
            x.stride(0) if residual is None else residual.stride(0),
            float(eps),
            HAS_RESIDUAL=residual is not None,
            BLOCK_D=block_d,
            INTERP=INTERPRET,
            num_warps=min(16, max(1, block_d // 512)),
        )
    return (y, h) if residual is not None else y
