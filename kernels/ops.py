"""The op table the model calls: one object per backend with the same five methods.

`TorchOps` calls the plain-torch `*_ref` functions (CPU, and the GPU fallback); `TritonOps` calls the
Triton launchers (CUDA tensors, or CPU tensors under TRITON_INTERPRET=1 in tests). Both are stateless;
pick one with `get_ops(name, device)` once when the model is built, never per call.

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

    def rms_norm(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        eps: float,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return _rms_norm.rms_norm_ref(x, weight, eps, residual)

    def rotary(
        self, x: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        return _rotary.rotary_ref(x, positions, cos, sin)

    def swiglu(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return _swiglu.swiglu_ref(gate, up)

    def attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        cu_seqlens_q: torch.Tensor,
        cu_seqlens_k: torch.Tensor,
        scale: float | None = None,
    ) -> torch.Tensor:
        return _attention.attention_ref(q, k, v, cu_seqlens_q, cu_seqlens_k, scale)

    def paged_attention(
        self,
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        cu_seqlens_q: torch.Tensor,
        page_table: torch.Tensor,
        kv_lens: torch.Tensor,
        page_size: int,
        scale: float | None = None,
    ) -> torch.Tensor:
        return _attention.paged_attention_ref(
            q, k_cache, v_cache, cu_seqlens_q, page_table, kv_lens, page_size, scale
        )

    write_kv = staticmethod(_attention.write_kv)

    def sample_head(
        self,
        logits: torch.Tensor,
        temperature: torch.Tensor,
        seeds: torch.Tensor,
        uncond: torch.Tensor | None = None,
        cfg_scale: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return _sampling_head.sample_head_ref(logits, temperature, seeds, uncond, cfg_scale)

    def moe(
        self,
        h: torch.Tensor,
        w_gate_up: torch.Tensor,
        w_down: torch.Tensor,
        weights: torch.Tensor,
        experts: torch.Tensor,
    ) -> torch.Tensor:
        return _moe.moe_ref(h, w_gate_up, w_down, weights, experts)


class TritonOps:
    """Triton launchers; inputs must be CUDA tensors (or CPU tensors under TRITON_INTERPRET=1)."""

    name = "triton"

    def rms_norm(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        eps: float,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return _rms_norm.rms_norm(x, weight, eps, residual)

    def rotary(
        self, x: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        return _rotary.rotary(x, positions, cos, sin)

    def swiglu(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return _swiglu.swiglu(gate, up)

    def attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        cu_seqlens_q: torch.Tensor,
        cu_seqlens_k: torch.Tensor,
        scale: float | None = None,
    ) -> torch.Tensor:
        return _attention.attention(q, k, v, cu_seqlens_q, cu_seqlens_k, scale)

    def paged_attention(
        self,
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        cu_seqlens_q: torch.Tensor,
        page_table: torch.Tensor,
        kv_lens: torch.Tensor,
        page_size: int,
        scale: float | None = None,
    ) -> torch.Tensor:
        return _attention.paged_attention(
            q, k_cache, v_cache, cu_seqlens_q, page_table, kv_lens, page_size, scale
        )

    write_kv = staticmethod(_attention.write_kv)

    def sample_head(
        self,
        logits: torch.Tensor,
        temperature: torch.Tensor,
        seeds: torch.Tensor,
        uncond: torch.Tensor | None = None,
        cfg_scale: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return _sampling_head.sample_head(logits, temperature, seeds, uncond, cfg_scale)

    def moe(
        self,
        h: torch.Tensor,
        w_gate_up: torch.Tensor,
        w_down: torch.Tensor,
        weights: torch.Tensor,
        experts: torch.Tensor,
    ) -> torch.Tensor:
        return _moe.grouped_moe(h, w_gate_up, w_down, weights, experts)


OPS_BACKENDS = ("torch", "triton", "auto")


def get_ops(name: str, device: torch.device) -> TorchOps | TritonOps:
    """name: "torch", "triton" or "auto" (Triton on CUDA devices, torch elsewhere)."""
    if name not in OPS_BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}: expected one of {', '.join(OPS_BACKENDS)}")
    device = torch.device(device)
    if name == "auto":
        name = "triton" if device.type == "cuda" else "torch"
    return TritonOps() if name == "triton" else TorchOps()
