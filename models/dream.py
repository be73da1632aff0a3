"""Dream-7B (`DreamModel`): the Qwen2 layout run as a masked diffusion model.

Checkpoint keys (model-formats.md section 6): `model.embed_tokens`, per layer N
`model.layers.N.self_attn.{q,k,v}_proj.{weight,bias}` (q/k/v carry biases), `self_attn.o_proj.weight`
(no bias), `mlp.{gate,up,down}_proj.weight`, `{input,post_attention}_layernorm.weight`; `model.norm`,
and `lm_head.weight` unless `tie_word_embeddings`. Module names mirror the keys, so loading is a
name-for-name assignment. Attention is bidirectional; RoPE the half-split form over the whole head.

Dream was initialised from an autoregressive model: the prediction for position i is the output at
i - 1. The network returns plain per-position outputs; `ModelSpec.shift_logits` makes the engine read
them one position early (engine/model_runner.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.config import architecture_of
from models.errors import CheckpointError
from models.forward_batch import PackedBatch, attend
from models.layers import HFDecoderLM, SwiGLU, Weight
from models.spec import ModelSpec, Target, hf_model_spec

# Every field the network reads, with its type; each must be in config.json.
_FIELDS = {
    "hidden_size": int,
    "intermediate_size": int,
    "num_hidden_layers": int,
    "num_attention_heads": int,
    "num_key_value_heads": int,
    "rms_norm_eps": float,
    "rope_theta": float,
    "vocab_size": int,
    "max_position_embeddings": int,
    "tie_word_embeddings": bool,
    "mask_token_id": int,
    "eos_token_id": int,
}
# key -> the values we implement (a missing key counts as its Qwen2 default, the first value)
_MUST_BE = {"hidden_act": ("silu",), "rope_scaling": (None,), "use_sliding_window": (False,)}


@dataclass(frozen=True)
class DreamConfig:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rms_norm_eps: float
    rope_theta: float
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    mask_token_id: int
    eos_token_id: int
    pad_token_id: int

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config.json") -> DreamConfig:
        architecture_of(raw, source)
        if "hidden_act" not in raw:
            raise CheckpointError(f"{source}: missing required field 'hidden_act'")
        for key, accepted in _MUST_BE.items():
            if raw.get(key, accepted[0]) not in accepted:
                raise CheckpointError(f"{source}: {key}={raw[key]!r} is not supported (only {accepted[0]!r})")
        values = {key: _read(raw, key, kind, source) for key, kind in _FIELDS.items()}
        pad = _read(raw, "pad_token_id", int, source) if "pad_token_id" in raw else values["eos_token_id"]
        for key, value in (*values.items(), ("pad_token_id", pad)):
            least = 0 if key.endswith("_token_id") else 1
            if _FIELDS.get(key, int) is int and value < least:
                raise CheckpointError(f"{source}: field '{key}' must be at least {least}; got {value!r}")
        cfg = cls(**values, pad_token_id=pad)
        heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        if cfg.hidden_size % heads:
            raise CheckpointError(f"{source}: num_attention_heads {heads} must divide hidden_size")
        if heads % kv_heads:
            raise CheckpointError(f"{source}: num_key_value_heads {kv_heads} must divide num_attention_heads")
        if raw.get("head_dim", cfg.head_dim) != cfg.head_dim:
            raise CheckpointError(
                f"{source}: head_dim={raw['head_dim']!r} is not supported (only hidden / heads)"
            )
        if cfg.mask_token_id == cfg.pad_token_id:
            raise CheckpointError(f"{source}: mask_token_id must differ from pad_token_id")
        if not 0 <= cfg.mask_token_id < cfg.vocab_size:
            raise CheckpointError(f"{source}: mask_token_id {cfg.mask_token_id} is outside vocab_size")
        return cfg

    def generation_defaults(self, gen: dict) -> dict:
        """The release's generation_config.json in SamplingParams terms. Its `alg` "origin" (Dream's
        default: each masked position revealed with probability 1 - s/t per step, in random order) is
        the continuous sampler; "maskgit_plus" (most confident first) the exact sampler with
        low-confidence remasking, "entropy" and "topk_margin" the exact sampler with remasking
        "entropy" / "margin". `steps` and `temperature` keep their names; `top_p`/`top_k` are per
        request."""
        alg = gen.get("alg")
        if "sampler" in gen or alg is None:
            return gen
        mapped = {"sampler": "continuous" if alg == "origin" else "exact"}
        remasking = {"entropy": "entropy", "topk_margin": "margin"}.get(alg)
        if remasking is not None:
            mapped["remasking"] = remasking
        return {**mapped, **gen}

    def model_spec(self) -> ModelSpec:
        """Shifted logits over every head row; answers end with EOS (<|endoftext|>) or <|im_end|>."""
        return hf_model_spec(self, "dream", shift_logits=True, stop_texts=("<|im_end|>", "<|endoftext|>"))


def _read(raw: dict, key: str, kind: type, source: str):
    """raw[key] as `kind` (int fields reject floats and booleans), or a CheckpointError naming it."""
    value = raw.get(key)
    if value is None:
        raise CheckpointError(f"{source}: missing required field '{key}'")
    ok = {int: (int,), float: (int, float), bool: (bool,)}[kind]
    if not isinstance(value, ok) or (kind is not bool and isinstance(value, bool)):
        raise CheckpointError(f"{source}: field '{key}' must be {kind.__name__}; got {value!r}")
    return kind(value)


class DreamBlock(nn.Module):
    """Qwen2 decoder layer without the causal mask: x + o_proj(attn(rope(q), rope(k), v)) over
    input_layernorm(x), then x + down_proj(silu(gate_proj h) * up_proj h) over post_attention_layernorm."""

    def __init__(self, cfg: DreamConfig):
        super().__init__()
        d, kv, h = cfg.hidden_size, cfg.num_key_value_heads * cfg.head_dim, cfg.intermediate_size
        self.cfg = cfg
        self.input_layernorm = Weight(d)
        self.post_attention_layernorm = Weight(d)
        self.self_attn = nn.ModuleDict(
            dict(
                q_proj=nn.Linear(d, d),
                k_proj=nn.Linear(d, kv),
                v_proj=nn.Linear(d, kv),
                o_proj=nn.Linear(d, d, bias=False),
            )
        )
        self.mlp = SwiGLU(d, h)

    def forward(self, x, batch: PackedBatch, ops, rope: tuple[torch.Tensor, torch.Tensor], layer: int):
        cfg, attn, n = self.cfg, self.self_attn, x.shape[0]
        h = ops.rms_norm(x, self.input_layernorm.weight, cfg.rms_norm_eps)
        q = attn["q_proj"](h).view(n, cfg.num_attention_heads, cfg.head_dim)
        k = attn["k_proj"](h).view(n, cfg.num_key_value_heads, cfg.head_dim)
        v = attn["v_proj"](h).view(n, cfg.num_key_value_heads, cfg.head_dim)
        q = ops.rotary(q, batch.positions, *rope)
        k = ops.rotary(k, batch.positions, *rope)
        a = attend(ops, q, k, v, batch, layer)
        h, x = ops.rms_norm(
            attn["o_proj"](a.reshape(n, cfg.hidden_size)),
            self.post_attention_layernorm.weight,
            cfg.rms_norm_eps,
            residual=x,
        )
        return x + self.mlp(h, ops)


class DreamModel(HFDecoderLM):
    def __init__(self, cfg: DreamConfig):
        layers = [DreamBlock(cfg) for _ in range(cfg.num_hidden_layers)]
        super().__init__(cfg.vocab_size, cfg.hidden_size, layers, cfg.tie_word_embeddings, cfg.rms_norm_eps)
        self.cfg = cfg
        self.rope_theta, self.rotary_dim = cfg.rope_theta, cfg.head_dim
        self.max_sequence_length = cfg.max_position_embeddings

    def checkpoint_layout(self) -> dict[str, Target]:
        """Every parameter under its own name (the names are the checkpoint's keys)."""
        return {name: Target(name) for name, _ in self.named_parameters()}
