"""Rotary position embedding, half-split (`rotate_half`, GPT-NeoX) form, computed in fp32.

For a head vector x = [x1, x2] (halves of head_dim) at position p with angles a = p * inv_freq:
    out = [x1 * cos(a) - x2 * sin(a), x2 * cos(a) + x1 * sin(a)], cast back to x's dtype.
The cos/sin tables hold [max_position, head_dim // 2] fp32 values; positions index their rows.
"""

from __future__ import annotations

import torch


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
