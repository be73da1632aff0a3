"""The LLaDA network (LLaDAModelLM), in plain PyTorch around pluggable ops.

Module and parameter names mirror the checkpoint keys after their `model.` prefix
(`transformer.blocks.3.q_proj.weight`), so loading is a name-for-name assignment.

The forward works on a packed batch (models/forward_batch.py): the query positions of B rows
concatenated along one axis; attention is fully bidirectional inside each row, over the row's own
positions or, for rows with a K/V cache, over its cached keys and values. Only the rows named by
`logits_index` go through the final norm and the LM head, since the sampler needs logits only for
positions it can commit.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.config import LLaDAConfig
from models.forward_batch import PackedBatch, attend

__all__ = ["LLaDABlock", "LLaDAModel", "PackedBatch"]


class LLaDABlock(nn.Module):
    """Pre-norm llama block: x + attn_out(attn(rope(q), rope(k), v)), then x + ff_out(swiglu)."""

    def __init__(self, cfg: LLaDAConfig):
        super().__init__()
        d, kv, h = cfg.d_model, cfg.n_kv_heads * cfg.head_dim, cfg.mlp_hidden_size
        self.cfg = cfg
        self.attn_norm = RMSNormWeight(d)
        self.ff_norm = RMSNormWeight(d)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, kv, bias=False)
        self.v_proj = nn.Linear(d, kv, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_proj = nn.Linear(d, h, bias=False)  # gate: goes through SiLU
        self.up_proj = nn.Linear(d, h, bias=False)
        self.ff_out = nn.Linear(h, d, bias=False)  # down projection

    def forward(self, x, batch: PackedBatch, ops, rope: tuple[torch.Tensor, torch.Tensor], layer: int):
        cfg, n = self.cfg, x.shape[0]
        h = ops.rms_norm(x, self.attn_norm.weight, cfg.rms_norm_eps)
        q = self.q_proj(h).view(n, cfg.n_heads, cfg.head_dim)
        k = self.k_proj(h).view(n, cfg.n_kv_heads, cfg.head_dim)
        v = self.v_proj(h).view(n, cfg.n_kv_heads, cfg.head_dim)
        q = ops.rotary(q, batch.positions, *rope)
        k = ops.rotary(k, batch.positions, *rope)
        a = attend(ops, q, k, v, batch, layer)
        h, x = ops.rms_norm(
            self.attn_out(a.reshape(n, cfg.d_model)), self.ff_norm.weight, cfg.rms_norm_eps, residual=x
        )
        return x + self.ff_out(ops.swiglu(self.ff_proj(h), self.up_proj(h)))


class RMSNormWeight(nn.Module):
    """Holds an RMSNorm weight under the checkpoint's name; the maths lives in the ops."""

    def __init__(self, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))


class LLaDAModel(nn.Module):
    def __init__(self, cfg: LLaDAConfig):
        super().__init__()
        self.cfg = cfg
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.embedding_size, cfg.d_model),
                blocks=nn.ModuleList(LLaDABlock(cfg) for _ in range(cfg.n_layers)),
                ln_f=RMSNormWeight(cfg.d_model),
            )
        )
        if not cfg.weight_tying:
            self.transformer["ff_out"] = nn.Linear(cfg.d_model, cfg.embedding_size, bias=False)
        self._rope: tuple[torch.Tensor, torch.Tensor] | None = None

    def rope_tables(self, max_position: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [P, head_dim / 2] fp32, grown on demand (long-context configs go past 4096)."""
        if self._rope is None or self._rope[0].shape[0] < max_position or self._rope[0].device != device:
            dim = self.cfg.head_dim
            size = max(max_position, self.cfg.max_sequence_length)
            inv_freq = 1.0 / (
                self.cfg.rope_theta ** (torch.arange(0, dim, 2, device=device, dtype=torch.float) / dim)
            )
            angles = torch.outer(torch.arange(size, device=device, dtype=torch.float), inv_freq)
            self._rope = (angles.cos(), angles.sin())
        return self._rope

    def forward(self, batch: PackedBatch, ops, logits_index: torch.Tensor | None = None) -> torch.Tensor:
        """Returns logits [M, embedding_size] for rows `logits_index` of the packed batch (all if None)."""
        tr = self.transformer
        x = tr["wte"](batch.input_ids)
        if self.cfg.input_emb_norm:
            x = x * math.sqrt(self.cfg.d_model)
        max_len = batch.max_len if batch.max_len is not None else int(batch.positions.max()) + 1
        rope = self.rope_tables(max_len, x.device)
        for i, block in enumerate(tr["blocks"]):
            x = block(x, batch, ops, rope, i)
        if logits_index is not None:
            x = x[logits_index]
        x = ops.rms_norm(x, tr["ln_f"].weight, self.cfg.rms_norm_eps)
        head = tr["wte"].weight if self.cfg.weight_tying else tr["ff_out"].weight
        logits = x @ head.t()
        if self.cfg.scale_logits:
            logits = logits * (1.0 / math.sqrt(self.cfg.d_model))
        return logits
