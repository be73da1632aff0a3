"""A tiny random LLaDA-MoE checkpoint in the released layout, its tokenizer beside it.

    model_dir = write_tiny_checkpoint(out)                  # pass as --model
    write_tiny_checkpoint(out, fused=True)                  # dInfer's FusedLLaDAMoEModelLM layout
    write_tiny_checkpoint(out, overrides={"moe_layer_freq": [0, 1]})   # config variants

Written from the published facts (keys, shapes and config fields of LLaDA-MoE-7B-A1B), not from
this repository's network: config.json with every field of the released LLaDAMoEConfig
(`model_type` "llada", as released), sharded safetensors with an index, and a byte-level BPE
tokenizer with the special tokens `<|endoftext|>` (EOS, pad), `<|mask|>`, `<|role_end|>` and dInfer's
chat format as the template. config.json names no `mask_token_id` (the tokenizer's mask token is the
mask). With the same seed, the fused layout holds exactly the weights of the unfused one:
`mlp.w1` [E, 2I, H] = each expert's gate rows then its up rows, `mlp.w2` [E, H, I] its down rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

CORPUS = [
    "<role>SYSTEM</role>detailed thinking off<role>HUMAN</role>hello<role>ASSISTANT</role>",
    "The sky is blue because air scatters short wavelengths of sunlight.",
    "reverse abcde sort 42 7 19 add 12 45 hello world why how what",
    "0 1 2 3 4 5 6 7 8 9 a b c d e f g h i j k l m n o p q r s t u v w x y z",
] * 20
EOS, MASK, ROLE_END = "<|endoftext|>", "<|mask|>", "<|role_end|>"

# dInfer's prompt: <role>SYSTEM</role>detailed thinking off<|role_end|><role>HUMAN</role>{prompt}
# <|role_end|><role>ASSISTANT</role>; a system message replaces the default system text.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' -%}"
    "<role>SYSTEM</role>{{ messages[0]['content'] }}<|role_end|>{%- set turns = messages[1:] -%}"
    "{%- else -%}<role>SYSTEM</role>detailed thinking off<|role_end|>{%- set turns = messages -%}"
    "{%- endif -%}"
    "{%- for m in turns -%}<role>{{ 'HUMAN' if m['role'] == 'user' else 'ASSISTANT' }}</role>"
    "{{ m['content'] }}<|role_end|>{%- endfor -%}"
    "{%- if add_generation_prompt -%}<role>ASSISTANT</role>{%- endif -%}"
)

TINY_SIZES = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    num_experts=8,
    num_experts_per_tok=2,
    expert_intermediate_size=32,
    dense_intermediate_size=96,
    max_position_embeddings=512,
)


def lladamoe_config_dict(*, vocab_size: int, eos_token_id: int, fused: bool = False, **sizes) -> dict:
    """Every field of the released config.json (LLaDAMoEConfig), at the given sizes: every layer MoE,
    QK-norm, full rotary, no shared expert, no expert bias, untied head."""
    layers = sizes["num_hidden_layers"]
    return {
        "architectures": ["FusedLLaDAMoEModelLM" if fused else "LLaDAMoEModelLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "clip_qkv": None,
        "dense_intermediate_size": sizes["dense_intermediate_size"],
        "eos_token_id": eos_token_id,
        "expert_intermediate_size": sizes["expert_intermediate_size"],
        "hidden_act": "silu",
        "hidden_size": sizes["hidden_size"],
        "initializer_range": 0.02,
        "max_position_embeddings": sizes["max_position_embeddings"],
        "model_type": "llada",
        "moe_layer_freq": [1] * layers,
        "moe_router_enable_expert_bias": False,
        "moe_router_score_function": "softmax",
        "norm_topk_prob": False,
        "num_attention_heads": sizes["num_attention_heads"],
        "num_experts": sizes["num_experts"],
        "num_experts_per_tok": sizes["num_experts_per_tok"],
        "num_hidden_layers": layers,
        "num_key_value_heads": sizes["num_key_value_heads"],
        "output_router_logits": False,
        "pad_token_id": eos_token_id,
        "partial_rotary_factor": 1.0,
        "qk_layernorm": True,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 50000.0,
        "routed_scaling_factor": 1,
        "router_aux_loss_coef": 0.01,
        "router_num_group": None,
        "router_topk_group": None,
        "shared_expert_intermediate_size": None,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.46.3",
        "use_cache": False,
        "vocab_size": vocab_size,
    }


def release_state_dict(cfg: dict, gen: torch.Generator, std: float, fused: bool) -> dict[str, torch.Tensor]:
    """Random tensors under the release's keys and shapes for config `cfg` (norm weights near 1)."""
    d, heads, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, bias = d // heads, cfg["attention_bias"]
    sd: dict[str, torch.Tensor] = {}

    def rand(key, *shape, scale=std, around=0.0):
        sd[key] = around + scale * torch.randn(shape, generator=gen)

    def swiglu(prefix, inter):
        rand(prefix + "gate_proj.weight", inter, d)
        rand(prefix + "up_proj.weight", inter, d)
        rand(prefix + "down_proj.weight", d, inter)

    rand("model.embed_tokens.weight", cfg["vocab_size"], d, scale=1.0)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        rand(p + "input_layernorm.weight", d, scale=0.1, around=1.0)
        for name, rows in (("q_proj", heads * hd), ("k_proj", kv * hd), ("v_proj", kv * hd), ("o_proj", d)):
            rand(f"{p}self_attn.{name}.weight", rows, d)
            if bias:
                rand(f"{p}self_attn.{name}.bias", rows)
        if cfg["qk_layernorm"]:
            rand(p + "self_attn.q_norm.weight", hd, scale=0.1, around=1.0)
            rand(p + "self_attn.k_norm.weight", hd, scale=0.1, around=1.0)
        rand(p + "post_attention_layernorm.weight", d, scale=0.1, around=1.0)
        if cfg["moe_layer_freq"][i] == 0:
            swiglu(p + "mlp.", cfg["dense_intermediate_size"])
            continue
        rand(p + "mlp.gate.weight", cfg["num_experts"], d)
        for e in range(cfg["num_experts"]):
            swiglu(f"{p}mlp.experts.{e}.", cfg["expert_intermediate_size"])
        if cfg["moe_router_enable_expert_bias"]:
            rand(p + "mlp.expert_bias", cfg["num_experts"], scale=0.1)
        if cfg["shared_expert_intermediate_size"] is not None:
            swiglu(p + "shared_expert.", cfg["shared_expert_intermediate_size"])
        if fused:
            fuse_experts(sd, p + "mlp.", cfg["num_experts"])
    rand("model.norm.weight", d, scale=0.1, around=1.0)
    if not cfg["tie_word_embeddings"]:
        rand("lm_head.weight", cfg["vocab_size"], d)
    return sd


def fuse_experts(sd: dict[str, torch.Tensor], prefix: str, num_experts: int) -> None:
    """dInfer's tools/transfer.py, in place: per-expert keys -> mlp.w1 [E, 2I, H], mlp.w2 [E, H, I]."""
    experts = [f"{prefix}experts.{e}." for e in range(num_experts)]
    sd[prefix + "w1"] = torch.stack(
        [torch.cat([sd.pop(x + "gate_proj.weight"), sd.pop(x + "up_proj.weight")]) for x in experts]
    )
    sd[prefix + "w2"] = torch.stack([sd.pop(x + "down_proj.weight") for x in experts])


def save_sharded(sd: dict[str, torch.Tensor], out: Path, num_shards: int = 2) -> None:
    """Safetensors shards by layer range (the first shard also holds the embedding), plus the index."""
    names = [f"model-{i + 1:05d}-of-{num_shards:05d}.safetensors" for i in range(num_shards)]
    shards: list[dict[str, torch.Tensor]] = [{} for _ in names]
    for key, value in sd.items():
        parts = key.split(".")
        index = int(parts[2]) % num_shards if parts[1] == "layers" else (0 if "embed" in key else -1)
        shards[index][key] = value.contiguous()
    weight_map, total = {}, 0
    for name, shard in zip(names, shards, strict=True):
        save_file(shard, str(out / name), metadata={"format": "pt"})
        weight_map.update({key: name for key in shard})
        total += sum(v.numel() * v.element_size() for v in shard.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def build_tokenizer(corpus: list[str], vocab_size: int = 320):
    """Byte-level BPE with LLaDA-MoE's special tokens (ids 0, 1, 2) and the dInfer chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, MASK, ROLE_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=EOS,
        pad_token=EOS,
        mask_token=MASK,
        additional_special_tokens=[ROLE_END],
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def write_tiny_checkpoint(
    out_dir: Path, *, seed: int = 0, fused: bool = False, overrides: dict | None = None, std: float = 0.3
) -> Path:
    """Write the checkpoint (tokenizer included) to `out_dir` and return it: the path for --model.

    `overrides`: config.json fields to change (moe_layer_freq, shared_expert_intermediate_size,
    moe_router_enable_expert_bias, partial_rotary_factor, attention_bias, clip_qkv, ...); the weights
    follow the resulting config. Weights are N(0, std^2) from a generator seeded with `seed`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(CORPUS)
    cfg = lladamoe_config_dict(vocab_size=len(tok), eos_token_id=tok.eos_token_id, fused=fused, **TINY_SIZES)
    cfg.update(overrides or {})
    sd = release_state_dict(cfg, torch.Generator().manual_seed(seed), std, fused)
    save_sharded({k: v.to(torch.float32) for k, v in sd.items()}, out)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    tok.save_pretrained(str(out))
    return out
