"""The op table the model calls: one object per backend with the same nine methods.

Each method is the kernel module's function itself, with the signature below: `TorchOps` holds the
plain-torch `*_ref` functions (CPU, and the GPU fallback), `TritonOps` the Triton launchers (CUDA
tensors, or CPU tensors under TRITON_INTERPRET=1 in tests). Both are stateless; pick one with
`get_ops(name, device)` once when the model is built, never per call.

Shapes (see each kernel file for the details):
    rms_norm(x [N, d], weight [d], eps, residual [N, d] | None) -> y | (y, x + residual)
    rotary(x [N, H, D], positions [N], cos [P, D/2], sin [P, D/2]) -> [N, H, D]
    swiglu(gate [N, h], up [N, h]) -> [N, h]
    attention(q [Nq, H, D], k [Nk, Hkv, D], v [Nk, Hkv, D], cu_seqlens_q [B+1], cu_seqlens_k [B+1],
              scale) -> [Nq, H, D]
    paged_attention(q [Nq, H, D], k_cache [S, Hkv, D], v_cache [S, Hkv, D], cu_seqlens_q [B+1],
                    page_table [B, P] int32, kv_lens [B] int32, page_size, scale) -> [Nq, H, D]
    write_kv(k_cache, v_cache, k [N, Hkv, D], v [N, Hkv, D], slots [N] int64) -> None (in place)
    sample_head(logits [R, V], temperature [R] fp32, seeds [R] int64, uncond [R, V] | None,
                cfg_scale) -> (tokens [R] int64, probs [R] fp32)
    max_probability(logits [R, V]) -> [R] fp32: the largest softmax probability of each row (what
                    sample_head gives its temperature-0 token)
    moe(h [N, d], w_gate_up [E, 2I, d], w_down [E, d, I], weights [N, k], experts [N, k] int64)
        -> [N, d]  (routing: kernels.moe.route_ref)
"""

from __future__ import annotations

import torch

from kernels import attention as _attention
from kernels import moe as _moe
from kernels import rms_norm as _rms_norm
from kernels import rotary as _rotary
from kernels import sampling_head as _sampling_head
from kernels import swiglu as _swiglu


class TorchOps:
    """Plain-torch references; works on any device."""

    name = "torch"
    rms_norm = staticmethod(_rms_norm.rms_norm_ref)
    rotary = staticmethod(_rotary.rotary_ref)
    swiglu = staticmethod(_swiglu.swiglu_ref)
    attention = staticmethod(_attention.attention_ref)
    paged_attention = staticmethod(_attention.paged_attention_ref)
    write_kv = staticmethod(_attention.write_kv)
    sample_head = staticmethod(_sampling_head.sample_head_ref)
    max_probability = staticmethod(_sampling_head.max_probability_ref)
    moe = staticmethod(_moe.moe_ref)


class TritonOps:
    """Triton launchers; inputs must be CUDA tensors (or CPU tensors under TRITON_INTERPRET=1). The
    launchers take the references' arguments, plus tuning keywords the op table never passes."""

    name = "triton"
    rms_norm = staticmethod(_rms_norm.rms_norm)
    rotary = staticmethod(_rotary.rotary)
    swiglu = staticmethod(_swiglu.swiglu)
    attention = staticmethod(_attention.attention)
    paged_attention = staticmethod(_attention.paged_attention)
    write_kv = staticmethod(_attention.write_kv)
    sample_head = staticmethod(_sampling_head.sample_head)
    max_probability = staticmethod(_sampling_head.max_probability)
    moe = staticmethod(_moe.grouped_moe)


OPS_BACKENDS = ("torch", "triton", "auto")


def get_ops(name: str, device: torch.device) -> TorchOps | TritonOps:
    """name: "torch", "triton" or "auto" (Triton on CUDA devices, torch elsewhere)."""
    if name not in OPS_BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}: expected one of {', '.join(OPS_BACKENDS)}")
    device = torch.device(device)
    if name == "auto":
        name = "triton" if device.type == "cuda" else "torch"
    return TritonOps() if name == "triton" else TorchOps()
