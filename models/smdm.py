"""The SMDM network (lit-gpt `TransEncoder` of ML-GSAI/SMDM), in plain PyTorch around pluggable ops.

Module and parameter names are the checkpoint keys (`transformer.h.3.attn.attn.weight`), so loading
is a name-for-name assignment. Per block: x + proj(attn(norm_1(x))), then x + w3(silu(w1 h) * w2 h)
over h = norm_2(x) (xformers SwiGLU naming); RMSNorm eps from the config; fully bidirectional.

The fused QKV weight is lit-gpt's grouped layout: its output rows are (n_query_groups, q_per_kv + 2,
head_size), each group holding its q_per_kv query heads, then its key head, then its value head (for
MHA: per-head [q, k, v] blocks, not [all Q | all K | all V]). Query head j therefore uses key head
j // q_per_kv, as `attend` expects.

Rotary: base 10000 over the whole head, half-split. SMDM builds its cos/sin tables in fp32 and
stores them in bf16 whatever the model's dtype (TransEncoder.build_rope_cache), so the model was
trained with, and the reference runs with, bf16-rounded tables: the tables here carry the same
bf16-rounded values (kept in fp32, the dtype the rotary op takes).
"""

from __future__ import annotations

import torch
from torch import nn

from models.forward_batch import PackedBatch, attend
from models.layers import DiffusionLM, Weight
from models.smdm_config import SMDMConfig
from models.spec import Target


class SMDMBlock(nn.Module):
    def __init__(self, cfg: SMDMConfig):
        super().__init__()
        d, hs = cfg.n_embd, cfg.head_size
        self.cfg = cfg
        self.norm_1 = Weight(d)
        self.attn = nn.ModuleDict(
            dict(
                attn=nn.Linear(d, (cfg.n_head + 2 * cfg.n_query_groups) * hs, bias=False),
                proj=nn.Linear(d, d, bias=False),
            )
        )
        self.norm_2 = Weight(d)
        h = cfg.intermediate_size
        swiglu = dict(w1=nn.Linear(d, h, bias=False), w2=nn.Linear(d, h, bias=False))
        swiglu["w3"] = nn.Linear(h, d, bias=False)  # w1: gate (SiLU), w2: up, w3: down
        self.mlp = nn.ModuleDict(dict(swiglu=nn.ModuleDict(swiglu)))

    def forward(self, x, batch: PackedBatch, ops, rope: tuple[torch.Tensor, torch.Tensor], layer: int):
        cfg, n = self.cfg, x.shape[0]
        per_kv = cfg.n_head // cfg.n_query_groups
        h = ops.rms_norm(x, self.norm_1.weight, cfg.norm_eps)
        qkv = self.attn["attn"](h).view(n, cfg.n_query_groups, per_kv + 2, cfg.head_size)
        q = qkv[:, :, :per_kv].reshape(n, cfg.n_head, cfg.head_size)
        k, v = qkv[:, :, per_kv], qkv[:, :, per_kv + 1]  # [n, groups, head_size]
        q = ops.rotary(q, batch.positions, *rope)
        k = ops.rotary(k, batch.positions, *rope)
        a = attend(ops, q, k, v, batch, layer)
        h, x = ops.rms_norm(
            self.attn["proj"](a.reshape(n, cfg.n_embd)), self.norm_2.weight, cfg.norm_eps, residual=x
        )
        mlp = self.mlp["swiglu"]
        return x + mlp["w3"](ops.swiglu(mlp["w1"](h), mlp["w2"](h)))


class SMDMModel(DiffusionLM):
    def __init__(self, cfg: SMDMConfig):
        super().__init__()
        self.cfg = cfg
        self.rope_theta, self.rotary_dim = cfg.rope_base, cfg.head_size
        self.max_sequence_length = cfg.block_size
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.padded_vocab_size + 1, cfg.n_embd),  # + the mask row
                h=nn.ModuleList(SMDMBlock(cfg) for _ in range(cfg.n_layer)),
                ln_f=Weight(cfg.n_embd),
            )
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.padded_vocab_size, bias=False)

    def checkpoint_layout(self) -> dict[str, Target]:
        """Every parameter under its own name: the release is `TransEncoder.state_dict()` as is."""
        return {name: Target(name) for name, _ in self.named_parameters()}

    def rope_tables(self, max_position: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """The shared fp32 tables rounded to bf16 values once per (re)build, as SMDM's are."""
        stale = self._rope is None or self._rope[0].shape[0] < max_position or self._rope[0].device != device
        cos, sin = super().rope_tables(max_position, device)
        if stale:
            self._rope = (cos.bfloat16().float(), sin.bfloat16().float())
        return self._rope

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.transformer["wte"](input_ids)

    def layers(self) -> nn.ModuleList:
        return self.transformer["h"]

    def head(self, x: torch.Tensor, ops) -> torch.Tensor:
        return ops.rms_norm(x, self.transformer["ln_f"].weight, self.cfg.norm_eps) @ self.lm_head.weight.t()
