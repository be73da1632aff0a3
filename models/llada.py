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
from models.layers import DiffusionLM, Weight
from models.spec import Target

__all__ = ["LLaDABlock", "LLaDAModel", "PackedBatch"]


class LLaDABlock(nn.Module):
    """Pre-norm llama block: x + attn_out(attn(rope(q), rope(k), v)), then x + ff_out(swiglu)."""

    def __init__(self, cfg: LLaDAConfig):
        super().__init__()
        d, kv, h = cfg.d_model, cfg.n_kv_heads * cfg.head_dim, cfg.mlp_hidden_size
        self.cfg = cfg
        self.attn_norm = Weight(d)
        self.ff_norm = Weight(d)
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


class LLaDAModel(DiffusionLM):
    def __init__(self, cfg: LLaDAConfig):
        super().__init__()
        self.cfg = cfg
        self.rope_theta, self.rotary_dim = cfg.rope_theta, cfg.head_dim
        self.max_sequence_length = cfg.max_sequence_length
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.embedding_size, cfg.d_model),
                blocks=nn.ModuleList(LLaDABlock(cfg) for _ in range(cfg.n_layers)),
                ln_f=Weight(cfg.d_model),
            )
        )
        if not cfg.weight_tying:
            self.transformer["ff_out"] = nn.Linear(cfg.d_model, cfg.embedding_size, bias=False)

    def checkpoint_layout(self) -> dict[str, Target]:
        """Every parameter under its own name behind the checkpoint's `model.` prefix."""
        return {"model." + name: Target(name) for name, _ in self.named_parameters()}

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.transformer["wte"](input_ids)
        return x * math.sqrt(self.cfg.d_model) if self.cfg.input_emb_norm else x

    def layers(self) -> nn.ModuleList:
        return self.transformer["blocks"]

    def head(self, x: torch.Tensor, ops) -> torch.Tensor:
        tr = self.transformer
        x = ops.rms_norm(x, tr["ln_f"].weight, self.cfg.rms_norm_eps)
        head = tr["wte"].weight if self.cfg.weight_tying else tr["ff_out"].weight
        logits = x @ head.t()
        if self.cfg.scale_logits:
            logits = logits * (1.0 / math.sqrt(self.cfg.d_model))
        return logits
