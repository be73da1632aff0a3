"""Write checkpoints in exactly the LLaDA layout: used by the demo trainer and the test fixtures.

config.json carries every field of the published LLaDA config; weights go to sharded safetensors
grouped by tensor kind (not by layer, as in the real LLaDA-8B shards) with an index; the tokenizer is
a byte-level BPE built locally, with LLaDA's special tokens and chat template.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

SPECIAL_TOKENS = [
    "<|startoftext|>",
    "<|endoftext|>",
    "<|mdm_mask|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]

# LLaDA's Instruct template: always ends with the assistant header.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "<|start_header_id|>assistant<|end_header_id|>{{ '\\n\\n' }}"
)


def llada_config_dict(
    *,
    d_model: int,
    n_heads: int,
    n_kv_heads: int,
    n_layers: int,
    mlp_hidden_size: int,
    vocab_size: int,
    mask_token_id: int,
    eos_token_id: int,
    max_sequence_length: int = 4096,
    rope_theta: float = 500000.0,
    weight_tying: bool = False,
) -> dict:
    """Every field of LLaDA-8B-Instruct's config.json, with the given sizes and token ids."""
    return {
        "activation_type": "silu",
        "alibi": False,
        "alibi_bias_max": 8.0,
        "architectures": ["LLaDAModelLM"],
        "attention_dropout": 0.0,
        "attention_layer_norm": False,
        "attention_layer_norm_with_affine": True,
        "bias_for_layer_norm": False,
        "block_group_size": 1,
        "block_type": "llama",
        "d_model": d_model,
        "embedding_dropout": 0.0,
        "embedding_size": vocab_size,
        "eos_token_id": eos_token_id,
        "flash_attention": False,
        "include_bias": False,
        "include_qkv_bias": False,
        "init_cutoff_factor": None,
        "init_device": "meta",
        "init_fn": "mitchell",
        "init_std": 0.02,
        "input_emb_norm": False,
        "layer_norm_type": "rms",
        "layer_norm_with_affine": True,
        "mask_token_id": mask_token_id,
        "max_sequence_length": max_sequence_length,
        "mlp_hidden_size": mlp_hidden_size,
        "mlp_ratio": 4,
        "model_type": "llada",
        "multi_query_attention": None,
        "n_heads": n_heads,
        "n_kv_heads": n_kv_heads,
        "n_layers": n_layers,
        "pad_token_id": eos_token_id,
        "precision": "amp_bf16",
        "residual_dropout": 0.0,
        "rms_norm_eps": 1e-05,
        "rope": True,
        "rope_full_precision": True,
        "rope_theta": rope_theta,
        "scale_logits": False,
        "transformers_version": "4.46.3",
        "use_cache": False,
        "vocab_size": vocab_size,
        "weight_tying": weight_tying,
    }


def tensor_kind(key: str) -> str:
    """The kind a key belongs to (`q_proj`, `ff_out`, `wte`, ...), used to group shards."""
    parts = key.split(".")
    return parts[-2] if "blocks" in parts else "top." + parts[-2]


def save_llada_checkpoint(
    state_dict: dict[str, torch.Tensor],
    config: dict,
    out_dir: str | Path,
    num_shards: int = 2,
    dtype: torch.dtype = torch.float32,
    generation_config: dict | None = None,
) -> None:
    """Write config.json and sharded safetensors (keys prefixed `model.`) plus the index."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if generation_config is not None:
        (out / "generation_config.json").write_text(json.dumps(generation_config, indent=2) + "\n")
    tensors = {"model." + k: v.detach().to(dtype).contiguous() for k, v in state_dict.items()}
    kinds = sorted({tensor_kind(k) for k in tensors})
    shards: list[dict[str, torch.Tensor]] = [{} for _ in range(num_shards)]
    for key, value in tensors.items():
        shards[kinds.index(tensor_kind(key)) % num_shards][key] = value
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{num_shards:05d}.safetensors"
        save_file(shard, str(out / name), metadata={"format": "pt"})
        for key, value in shard.items():
            weight_map[key] = name
            total += value.numel() * value.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def build_tokenizer(corpus: list[str], vocab_size: int, model_max_length: int = 4096):
    """A byte-level BPE trained on `corpus`, with LLaDA's special tokens and chat template.

    The special tokens get ids 0..5 in SPECIAL_TOKENS order. Returns a PreTrainedTokenizerFast;
    save it with `save_pretrained(dir)`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        mask_token="<|mdm_mask|>",
        additional_special_tokens=["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def write_random_checkpoint(
    out_dir: str | Path,
    corpus: list[str],
    tokenizer_vocab_size: int,
    *,
    seed: int = 0,
    std: float = 0.02,
    num_shards: int = 3,
    generation_config: dict | None = None,
    **sizes,
) -> Path:
    """A random-weight LLaDA-layout checkpoint with a tokenizer trained on `corpus` (tests, benchmarks).

    `sizes`: d_model, n_heads, n_kv_heads, n_layers, mlp_hidden_size, max_sequence_length. Weights are
    N(0, std^2) from a generator seeded with `seed`.
    """
    from models.config import LLaDAConfig
    from models.llada import LLaDAModel

    tok = build_tokenizer(corpus, tokenizer_vocab_size)
    ids = tok.convert_tokens_to_ids(SPECIAL_TOKENS)
    cfg = llada_config_dict(vocab_size=len(tok), mask_token_id=ids[2], eos_token_id=ids[1], **sizes)
    gen = torch.Generator().manual_seed(seed)
    model = LLaDAModel(LLaDAConfig.from_dict(cfg))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    save_llada_checkpoint(
        model.state_dict(), cfg, out_dir, num_shards=num_shards, generation_config=generation_config
    )
    tok.save_pretrained(str(out_dir))
    return Path(out_dir)
