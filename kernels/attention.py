"""Bidirectional (non-causal) attention over a packed variable-length batch, GQA aware.

Queries of B sequences are packed along one axis: sequence b owns rows
cu_seqlens_q[b]:cu_seqlens_q[b+1] of q, and attends to rows cu_seqlens_k[b]:cu_seqlens_k[b+1] of
k and v (its cached segments followed by its fresh block, already concatenated by the caller).
No mask inside a sequence. n_kv_heads divides n_heads: kv head j serves q heads j*g .. j*g+g-1.
Softmax in fp32; scale 1/sqrt(head_dim) unless given.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """q: [Nq, H, D]; k, v: [Nk, Hkv, D]; cu_seqlens_*: [B + 1] int. Returns [Nq, H, D] in q.dtype."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    group = q.shape[1] // k.shape[1]
    lengths_q = cu_seqlens_q.diff()
    if torch.equal(cu_seqlens_q, cu_seqlens_k) and bool((lengths_q == lengths_q[0]).all()):
        # Equal-length sequences (training batches, uniform canvases): one batched call.
        b, t = lengths_q.numel(), int(lengths_q[0])
        qb = q.view(b, t, *q.shape[1:]).transpose(1, 2)  # [B, H, T, D]
        kb = k.view(b, t, *k.shape[1:]).transpose(1, 2).repeat_interleave(group, dim=1)
        vb = v.view(b, t, *v.shape[1:]).transpose(1, 2).repeat_interleave(group, dim=1)
        ob = F.scaled_dot_product_attention(qb, kb, vb, is_causal=False, scale=scale)
        return ob.transpose(1, 2).reshape(q.shape)
    out = torch.empty_like(q)
    bounds_q = cu_seqlens_q.tolist()
    bounds_k = cu_seqlens_k.tolist()
    for b in range(len(bounds_q) - 1):
        qs, qe, ks, ke = bounds_q[b], bounds_q[b + 1], bounds_k[b], bounds_k[b + 1]
        if qe == qs:
            continue
        qb = q[qs:qe].transpose(0, 1)  # [H, T, D]
        kb = k[ks:ke].transpose(0, 1).repeat_interleave(group, dim=0)
        vb = v[ks:ke].transpose(0, 1).repeat_interleave(group, dim=0)
        ob = F.scaled_dot_product_attention(qb, kb, vb, is_causal=False, scale=scale)
        out[qs:qe] = ob.transpose(0, 1)
    return out
