"""The LLaDA-MoE network (LLaDAMoEModelLM, and dInfer's FusedLLaDAMoEModelLM), plain PyTorch around the ops.

Parameter names are the checkpoint keys (`model.layers.3.self_attn.q_proj.weight`), except the routed
experts: each MoE layer stores them stacked, `mlp.w_gate_up` [E, 2I, H] (per expert its I gate rows,
then its I up rows) and `mlp.w_down` [E, H, I], the layout `ops.moe` (kernels/moe.py) reads.
`checkpoint_layout` loads the release's per-expert keys (`mlp.experts.M.{gate,up,down}_proj.weight`)
into slices of them, or dInfer's fused `mlp.w1` / `mlp.w2` whole (only the expert keys differ).

Layer (the published OLMoE-style block): x + o_proj(attn(rope(q_norm(q)), rope(k_norm(k)), v)) over
input_layernorm(x), the per-head q/k RMSNorm over head_dim before RoPE (if qk_layernorm), q/k/v
clamped to +-clip_qkv (if set), RoPE on the first rotary_dim channels of each head; then
x + mlp(h) (+ shared_expert(h), MoE layers only) over h = post_attention_layernorm(x). The mlp is a
dense SwiGLU (moe_layer_freq 0) or the routed experts: softmax over all experts in fp32 (+ expert_bias),
top-k, no renormalisation, out = sum_j w_j expert_j(h). Logits unshifted.
"""

from __future__ import annotations

import torch
from torch import nn

from kernels.moe import route_ref
from models.forward_batch import PackedBatch, attend
from models.layers import HFDecoderLM, SwiGLU, Weight, rotary
from models.llada_moe_config import LLaDAMoEConfig
from models.spec import Target


class SparseMoE(nn.Module):
    """Router `gate` [E, H] and the E SwiGLU experts stacked for `ops.moe`."""

    def __init__(self, cfg: LLaDAMoEConfig):
        super().__init__()
        d, e, inter = cfg.hidden_size, cfg.num_experts, cfg.expert_intermediate_size
        self.top_k = cfg.num_experts_per_tok
        self.gate = nn.Linear(d, e, bias=False)
        self.w_gate_up = nn.Parameter(torch.empty(e, 2 * inter, d))
        self.w_down = nn.Parameter(torch.empty(e, d, inter))
        # A buffer in the release; a parameter here so that the loader fills it like the weights.
        self.expert_bias = nn.Parameter(torch.zeros(e)) if cfg.moe_router_enable_expert_bias else None

    def forward(self, h: torch.Tensor, ops) -> torch.Tensor:
        weights, experts = route_ref(h, self.gate.weight, self.top_k, self.expert_bias)
        return ops.moe(h, self.w_gate_up, self.w_down, weights, experts)


class Attention(nn.Module):
    def __init__(self, cfg: LLaDAMoEConfig):
        super().__init__()
        d, hd, bias = cfg.hidden_size, cfg.head_dim, cfg.attention_bias
        self.cfg = cfg
        self.q_proj = nn.Linear(d, cfg.num_attention_heads * hd, bias=bias)
        self.k_proj = nn.Linear(d, cfg.num_key_value_heads * hd, bias=bias)
        self.v_proj = nn.Linear(d, cfg.num_key_value_heads * hd, bias=bias)
        self.o_proj = nn.Linear(d, d, bias=bias)
        if cfg.qk_layernorm:
            self.q_norm = Weight(hd)
            self.k_norm = Weight(hd)

    def forward(self, h, batch: PackedBatch, ops, rope, layer: int) -> torch.Tensor:
        cfg, n, hd = self.cfg, h.shape[0], self.cfg.head_dim
        q, k, v = self.q_proj(h), self.k_proj(h), self.v_proj(h)
        if cfg.qk_layernorm:  # per head: RMSNorm over head_dim
            q = ops.rms_norm(q.reshape(-1, hd), self.q_norm.weight, cfg.rms_norm_eps)
            k = ops.rms_norm(k.reshape(-1, hd), self.k_norm.weight, cfg.rms_norm_eps)
        if cfg.clip_qkv is not None:
            q, k, v = (t.clamp(-cfg.clip_qkv, cfg.clip_qkv) for t in (q, k, v))
        q = rotary(ops, q.reshape(n, cfg.num_attention_heads, hd), batch.positions, rope, cfg.rotary_dim)
        k = rotary(ops, k.reshape(n, cfg.num_key_value_heads, hd), batch.positions, rope, cfg.rotary_dim)
        a = attend(ops, q, k, v.reshape(n, cfg.num_key_value_heads, hd), batch, layer)
        return self.o_proj(a.reshape(n, cfg.hidden_size))


class LLaDAMoELayer(nn.Module):
    def __init__(self, cfg: LLaDAMoEConfig, index: int):
        super().__init__()
        d, moe = cfg.hidden_size, cfg.is_moe_layer(index)
        self.eps = cfg.rms_norm_eps
        self.input_layernorm = Weight(d)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = Weight(d)
        self.mlp = SparseMoE(cfg) if moe else SwiGLU(d, cfg.dense_intermediate_size)
        shared = cfg.shared_expert_intermediate_size
        self.shared_expert = SwiGLU(d, shared) if moe and shared is not None else None

    def forward(self, x, batch: PackedBatch, ops, rope, layer: int) -> torch.Tensor:
        h = ops.rms_norm(x, self.input_layernorm.weight, self.eps)
        a = self.self_attn(h, batch, ops, rope, layer)
        h, x = ops.rms_norm(a, self.post_attention_layernorm.weight, self.eps, residual=x)
        out = self.mlp(h, ops)
        if self.shared_expert is not None:
            out = out + self.shared_expert(h, ops)
        return x + out


class LLaDAMoEModel(HFDecoderLM):
    def __init__(self, cfg: LLaDAMoEConfig):
        layers = [LLaDAMoELayer(cfg, i) for i in range(cfg.num_hidden_layers)]
        super().__init__(cfg.vocab_size, cfg.hidden_size, layers, cfg.tie_word_embeddings, cfg.rms_norm_eps)
        self.cfg = cfg
        self.rope_theta, self.rotary_dim = cfg.rope_theta, cfg.rotary_dim
        self.max_sequence_length = cfg.max_position_embeddings

    def checkpoint_layout(self) -> dict[str, Target | None]:
        """Every parameter under its own name, the stacked experts from the release's expert keys;
        a tied head's `lm_head.weight`, if a file carries it, is not read."""
        layout = {
            name: Target(name)
            for name, _ in self.named_parameters()
            if not name.endswith((".w_gate_up", ".w_down"))
        }
        for i, layer in enumerate(self.layers()):
            if isinstance(layer.mlp, SparseMoE):
                layout.update(expert_layout(f"model.layers.{i}.mlp.", self.cfg))
        if self.cfg.tie_word_embeddings:
            layout["lm_head.weight"] = None
        return layout


def expert_layout(prefix: str, cfg: LLaDAMoEConfig) -> dict[str, Target]:
    """Checkpoint keys of one MoE layer's experts -> the stacked parameters under `prefix`."""
    gate_up, down = prefix + "w_gate_up", prefix + "w_down"
    if cfg.fused_experts:  # dInfer's conversion: w1 = per expert gate rows then up rows, w2 = down
        return {prefix + "w1": Target(gate_up), prefix + "w2": Target(down)}
    inter, layout = cfg.expert_intermediate_size, {}
    for e in range(cfg.num_experts):
        expert = f"{prefix}experts.{e}."
        layout[expert + "gate_proj.weight"] = Target(gate_up, (e, slice(0, inter)))
        layout[expert + "up_proj.weight"] = Target(gate_up, (e, slice(inter, 2 * inter)))
        layout[expert + "down_proj.weight"] = Target(down, (e,))
    return layout
