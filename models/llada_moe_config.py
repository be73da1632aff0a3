"""LLaDA-MoE config.json (`LLaDAMoEModelLM`, and dInfer's fused `FusedLLaDAMoEModelLM`), field by field.

The published config class (LLaDAMoEConfig, OLMoE-derived) defaults most fields to sentinels (-1,
None, []), so every field the network depends on must be in the file; options the network does not
implement are rejected naming the file and the key. Fields the published forward ignores are ignored
here too: `norm_topk_prob` (the MoE block hard-codes it off: the top-k weights are never
renormalised, whatever the file says), `routed_scaling_factor`, `router_num_group`,
`router_topk_group`, `router_aux_loss_coef` (training only).

Token ids: the release's config.json is not known to carry `mask_token_id`; the mask id is the
config's when present, else the tokenizer's mask token, else the published 156895 (EOS likewise:
config, tokenizer, 156892). `with_tokenizer` resolves them once the tokenizer is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from models.config import architecture_of, field_getter
from models.errors import CheckpointError
from models.spec import ModelSpec, hf_model_spec

PUBLISHED_MASK_ID = 156895  # <|mask|> (dInfer's benchmarks, llama.cpp's converter)
PUBLISHED_EOS_ID = 156892  # <|endoftext|>
ROLE_END = "<|role_end|>"  # ends an assistant turn in the chat format

UNFUSED, FUSED = "LLaDAMoEModelLM", "FusedLLaDAMoEModelLM"


@dataclass(frozen=True)
class LLaDAMoEConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    dense_intermediate_size: int | None  # None when no layer is dense
    expert_intermediate_size: int
    shared_expert_intermediate_size: int | None  # None: no shared expert
    num_experts: int
    num_experts_per_tok: int
    moe_layer_freq: tuple[int, ...]  # per layer: 1 MoE, 0 dense MLP
    moe_router_enable_expert_bias: bool
    qk_layernorm: bool
    attention_bias: bool
    clip_qkv: float | None
    max_position_embeddings: int
    rms_norm_eps: float
    rope_theta: float
    partial_rotary_factor: float
    tie_word_embeddings: bool
    mask_token_id: int | None  # None until `with_tokenizer` (config.json had none)
    eos_token_id: int | None
    fused_experts: bool  # dInfer layout: mlp.w1 / mlp.w2 per layer instead of per-expert keys
    architecture: str = UNFUSED
    source: str = "config.json"  # the file, for errors found after reading it

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rotary_dim(self) -> int:
        """Channels of each head that RoPE turns (the published init: int(head_dim * factor))."""
        return int(self.head_dim * self.partial_rotary_factor)

    def is_moe_layer(self, layer: int) -> bool:
        return self.moe_layer_freq[layer] == 1

    def with_tokenizer(self, tokenizer) -> LLaDAMoEConfig:
        """Fill the ids config.json lacks: the tokenizer's mask / EOS token, else the published ids."""

        def pick(current, token_id, published):
            if current is not None:
                return current
            return token_id if token_id is not None else published

        mask = pick(self.mask_token_id, getattr(tokenizer, "mask_token_id", None), PUBLISHED_MASK_ID)
        eos = pick(self.eos_token_id, getattr(tokenizer, "eos_token_id", None), PUBLISHED_EOS_ID)
        for name, value in (("mask", mask), ("EOS", eos)):
            if not 0 <= value < self.vocab_size:
                raise CheckpointError(
                    f"{self.source}: {name} token id {value} is outside the vocabulary "
                    f"(vocab_size {self.vocab_size}); set '{name.lower()}_token_id'"
                )
        return replace(self, mask_token_id=mask, eos_token_id=eos)

    def model_spec(self) -> ModelSpec:
        """Unshifted logits over the vocabulary, no time input; an answer ends with EOS or <|role_end|>."""
        if self.mask_token_id is None or self.eos_token_id is None:
            raise ValueError("token ids unresolved: call with_tokenizer first")
        return hf_model_spec(self, "llada_moe", stop_texts=(ROLE_END,))

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config.json") -> LLaDAMoEConfig:
        get = field_getter(raw, source)

        def reject(key: str, ok: bool, what: str):
            if not ok:
                raise CheckpointError(f"{source}: {key}={raw.get(key)!r} is not supported ({what})")

        reject("hidden_act", get("hidden_act", "silu") == "silu", "only 'silu'")
        reject("rope_scaling", raw.get("rope_scaling") is None, "only null: plain RoPE")
        score = raw.get("moe_router_score_function")
        reject("moe_router_score_function", score in (None, "softmax"), "only 'softmax'")
        arch = architecture_of(raw, source)
        size = dict(kind=int, minimum=1)
        hidden, heads = get("hidden_size", **size), get("num_attention_heads", **size)
        kv_heads = get("num_key_value_heads", heads, **size)
        layers, experts = get("num_hidden_layers", **size), get("num_experts", **size)
        freq = get("moe_layer_freq")
        if not isinstance(freq, list) or len(freq) != layers or any(f not in (0, 1) for f in freq):
            raise CheckpointError(
                f"{source}: moe_layer_freq must list 0 (dense) or 1 (MoE) for each of the {layers} layers"
            )
        if "shared_expert_intermediate_size" not in raw:  # the class default (-1) builds nothing usable
            raise CheckpointError(
                f"{source}: missing required field 'shared_expert_intermediate_size' (null: no shared expert)"
            )
        shared = get("shared_expert_intermediate_size", None, **size)
        clip = get("clip_qkv", None, kind=float)
        cfg = cls(
            vocab_size=get("vocab_size", **size),
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            dense_intermediate_size=get("dense_intermediate_size", **size) if 0 in freq else None,
            expert_intermediate_size=get("expert_intermediate_size", **size),
            shared_expert_intermediate_size=shared,
            num_experts=experts,
            num_experts_per_tok=get("num_experts_per_tok", **size),
            moe_layer_freq=tuple(int(f) for f in freq),
            moe_router_enable_expert_bias=get("moe_router_enable_expert_bias", False, kind=bool),
            qk_layernorm=get("qk_layernorm", kind=bool),
            attention_bias=get("attention_bias", False, kind=bool),
            clip_qkv=clip,
            max_position_embeddings=get("max_position_embeddings", **size),
            rms_norm_eps=get("rms_norm_eps", kind=float),
            rope_theta=get("rope_theta", kind=float),
            partial_rotary_factor=get("partial_rotary_factor", kind=float),
            tie_word_embeddings=get("tie_word_embeddings", False, kind=bool),
            mask_token_id=_optional_id(raw, "mask_token_id", source),
            eos_token_id=_optional_id(raw, "eos_token_id", source),
            fused_experts=arch == FUSED,
            architecture=arch,
            source=source,
        )
        _check_sizes(cfg, source)
        return cfg


def _optional_id(raw: dict, key: str, source: str) -> int | None:
    """raw[key] as a token id (None when absent or null); a list (generation-style ids) gives its first."""
    value = raw.get(key)
    if isinstance(value, list):  # generation-style list of ids: the first is the EOS
        value = value[0] if value else None
    return field_getter({key: value}, source)(key, None, kind=int, minimum=0)


def _check_sizes(cfg: LLaDAMoEConfig, source: str) -> None:
    if cfg.hidden_size % cfg.num_attention_heads:
        raise CheckpointError(
            f"{source}: num_attention_heads {cfg.num_attention_heads} must divide "
            f"hidden_size {cfg.hidden_size}"
        )
    if cfg.num_attention_heads % cfg.num_key_value_heads:
        raise CheckpointError(
            f"{source}: num_key_value_heads {cfg.num_key_value_heads} must divide "
            f"num_attention_heads {cfg.num_attention_heads}"
        )
    if not 1 <= cfg.num_experts_per_tok <= cfg.num_experts:
        raise CheckpointError(
            f"{source}: num_experts_per_tok {cfg.num_experts_per_tok} must be in [1, num_experts "
            f"{cfg.num_experts}]"
        )
    rot = cfg.rotary_dim
    if rot < 2 or rot % 2 or rot > cfg.head_dim:
        raise CheckpointError(
            f"{source}: partial_rotary_factor {cfg.partial_rotary_factor} gives {rot} rotary channels "
            f"of head_dim {cfg.head_dim} (need an even count in [2, head_dim])"
        )
    if cfg.clip_qkv is not None and cfg.clip_qkv <= 0:
        raise CheckpointError(f"{source}: clip_qkv must be positive or null; got {cfg.clip_qkv}")
