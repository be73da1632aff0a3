"""SwiGLU activation: silu(gate) * up, elementwise (LLaDA: gate = ff_proj(h), up = up_proj(h))."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def swiglu_ref(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """gate, up: [N, h] of one dtype. Returns [N, h]."""
    return F.silu(gate) * up
