"""Layers every family shares, written once around the kernels/ ops.

`DiffusionLM` is the skeleton of every network here: embed the packed ids, run the blocks (each
sees the batch, the ops, the rotary tables and its layer index), keep only the rows the sampler
needs (`logits_index`), then the family's head. A family fills in `embed`, `layers` and `head`;
attention (bidirectional, GQA, K/V cache pages) is `models/forward_batch.attend` for all of them.
"""

from __future__ import annotations

import torch
from torch import nn

from models.forward_batch import PackedBatch


class Weight(nn.Module):
    """Holds a norm's weight (and bias) under the checkpoint's names; the maths lives in the ops."""

    def __init__(self, d: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        if bias:
            self.bias = nn.Parameter(torch.zeros(d))


def layer_norm(x: torch.Tensor, norm: Weight, eps: float) -> torch.Tensor:
    """LayerNorm in fp32 without affine, cast back, then * weight + bias (RADD's LayerNormWot)."""
    y = nn.functional.layer_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)
    return y * norm.weight + norm.bias


def rope_tables(theta: float, dim: int, size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [size, dim / 2] fp32 of the half-split (rotate_half) rotary embedding."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, device=device, dtype=torch.float) / dim))
    angles = torch.outer(torch.arange(size, device=device, dtype=torch.float), inv_freq)
    return angles.cos(), angles.sin()


def rotary(ops, x: torch.Tensor, positions: torch.Tensor, rope, rotary_dim: int | None = None):
    """Rotate x [N, H, D] by position; with `rotary_dim` < D only the first rotary_dim channels turn
    (partial rotary), the rest pass through."""
    if rotary_dim is None or rotary_dim == x.shape[-1]:
        return ops.rotary(x, positions, *rope)
    turned = ops.rotary(x[..., :rotary_dim].contiguous(), positions, *rope)
    return torch.cat([turned, x[..., rotary_dim:]], dim=-1)


class DiffusionLM(nn.Module):
    """Embed -> blocks -> rows the sampler needs -> head. Subclasses set `rope_theta`, `rotary_dim`
    and `max_sequence_length` and implement `embed`, `layers`, `head` and `checkpoint_layout`."""

    rope_theta: float
    rotary_dim: int
    max_sequence_length: int

    def __init__(self):
        super().__init__()
        self._rope: tuple[torch.Tensor, torch.Tensor] | None = None

    def rope_tables(self, max_position: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [P, rotary_dim / 2] fp32, built for at least the config's length; regrown only
        when a caller asks for more (the engine builds them once at start for the admitted length)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:  # "cuda" is the current device, as tensors say
            device = torch.device("cuda", torch.cuda.current_device())
        if self._rope is None or self._rope[0].shape[0] < max_position or self._rope[0].device != device:
            size = max(max_position, self.max_sequence_length)
            self._rope = rope_tables(self.rope_theta, self.rotary_dim, size, device)
        return self._rope

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def layers(self) -> nn.ModuleList:
        raise NotImplementedError

    def head(self, x: torch.Tensor, ops) -> torch.Tensor:
        raise NotImplementedError

    def hidden(self, batch: PackedBatch, ops) -> torch.Tensor:
        """The last block's output [N, d] for every packed position (before the head's norm): the part
        of a forward the engine can capture in a CUDA graph (engine/cuda_graphs.py)."""
        x = self.embed(batch.input_ids)
        max_len = batch.max_len if batch.max_len is not None else int(batch.positions.max()) + 1
        rope = self.rope_tables(max_len, x.device)
        for i, block in enumerate(self.layers()):
            x = block(x, batch, ops, rope, i)
        return x

    def forward(self, batch: PackedBatch, ops, logits_index: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [M, vocab] for rows `logits_index` of the packed batch (all rows if None)."""
        x = self.hidden(batch, ops)
        return self.head(x if logits_index is None else x[logits_index], ops)


class SwiGLU(nn.Module):
    """down_proj(silu(gate_proj h) * up_proj h), under Hugging Face's names (Qwen2, OLMoE, Llama)."""

    def __init__(self, d: int, inter: int):
        super().__init__()
        self.gate_proj = nn.Linear(d, inter, bias=False)
        self.up_proj = nn.Linear(d, inter, bias=False)
        self.down_proj = nn.Linear(inter, d, bias=False)

    def forward(self, h: torch.Tensor, ops) -> torch.Tensor:
        return self.down_proj(ops.swiglu(self.gate_proj(h), self.up_proj(h)))


class HFDecoderLM(DiffusionLM):
    """The Hugging Face decoder skeleton (`model.embed_tokens`, `model.layers.N`, `model.norm`, and
    `lm_head` unless tied), RMSNorm before the head: Dream and LLaDA-MoE fill in the layers."""

    def __init__(self, vocab_size: int, hidden_size: int, layers: list[nn.Module], tied: bool, eps: float):
        super().__init__()
        self.tied, self.eps = tied, eps
        self.model = nn.ModuleDict(
            dict(
                embed_tokens=nn.Embedding(vocab_size, hidden_size),
                layers=nn.ModuleList(layers),
                norm=Weight(hidden_size),
            )
        )
        if not tied:
            self.lm_head = nn.Linear(hidden_size, vocab_size, bias=False)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model["embed_tokens"](input_ids)

    def layers(self) -> nn.ModuleList:
        return self.model["layers"]

    def head(self, x: torch.Tensor, ops) -> torch.Tensor:
        x = ops.rms_norm(x, self.model["norm"].weight, self.eps)
        return x @ (self.model["embed_tokens"] if self.tied else self.lm_head).weight.t()
