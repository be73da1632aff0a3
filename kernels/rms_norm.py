"""RMSNorm, optionally fused with the residual add that precedes it.

Reference semantics (LLaDA's RMSLayerNorm): x is upcast to fp32, scaled by rsqrt(mean(x^2) + eps),
cast back to the input dtype, and only then multiplied by `weight`.
With `residual`, the input is `x + residual` (in the input dtype) and the sum is returned as well,
so a transformer block can carry it to its next residual add.
"""

from __future__ import annotations

import torch


def rms_norm_ref(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """x, residual: [N, d]; weight: [d]. Returns y, or (y, x + residual) when residual is given."""
    if residual is not None:
        x = x + residual
    xf = x.float()
    y = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight
    return (y, x) if residual is not None else y
