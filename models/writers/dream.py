"""A tiny random Dream checkpoint in the released layout (Dream-org/Dream-v0-Instruct-7B).

    model_dir = write_tiny_checkpoint(out)     # out: pass as --model (the tokenizer is inside)

Files as the release has them: config.json (the Qwen2-style DreamConfig fields, `architectures`
["DreamModel"], model_type "Dream"), generation_config.json (Dream's diffusion keys: steps,
temperature, alg, ...), bf16 weights split over model-0000N-of-00004.safetensors in key order with
model.safetensors.index.json, and the tokenizer files of the release's custom `DreamTokenizer`
(Qwen2's byte-level BPE): vocab.json, merges.txt, tokenizer_config.json (special tokens, ChatML chat
template) and special_tokens_map.json; no tokenizer.json. The ids keep the release's order: the BPE
vocabulary, then `<|endoftext|>` (EOS and pad), `<|im_start|>`, `<|im_end|>`, `<|beginoftext|>`,
`<|mask|>`; the head is padded past the tokenizer (152064 rows for 151667 tokens in the release).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

CORPUS = [
    "The sky is blue because air scatters short wavelengths of sunlight.",
    "user assistant system You are a helpful assistant. Hello! How can I help you today?",
    "0 1 2 3 4 5 6 7 8 9 a b c d e f g h i j k l m n o p q r s t u v w x y z",
] * 20
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|beginoftext|>", "<|mask|>"]
# Qwen2's pre-tokenizer split (letters, single digits, punctuation runs, newlines, spaces).
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# ChatML; a conversation without a system turn gets the default one.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SIZES = dict(
    hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)
NUM_SHARDS = 4


def write_tiny_checkpoint(out_dir: Path, *, seed: int = 0) -> Path:
    """Write the checkpoint and its tokenizer to `out_dir` (created); return `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = write_tokenizer(out)
    eos, mask = ids["<|endoftext|>"], ids["<|mask|>"]
    config = dream_config_dict(vocab_size=-(-(mask + 1) // 64) * 64, eos_token_id=eos, mask_token_id=mask)
    _write_json(out / "config.json", config)
    _write_json(out / "generation_config.json", generation_config_dict(eos))
    save_sharded(random_state_dict(config, seed), out)
    return out


def dream_config_dict(*, vocab_size: int, eos_token_id: int, mask_token_id: int) -> dict:
    """The release's config.json fields, with the tiny sizes."""
    return {
        "architectures": ["DreamModel"],
        "attention_dropout": 0.0,
        "auto_map": {
            "AutoConfig": "configuration_dream.DreamConfig",
            "AutoModel": "modeling_dream.DreamModel",
        },
        "bos_token_id": eos_token_id,
        "eos_token_id": eos_token_id,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "mask_token_id": mask_token_id,
        "max_position_embeddings": 2048,
        "max_window_layers": SIZES["num_hidden_layers"],
        "model_type": "Dream",
        "pad_token_id": eos_token_id,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.46.2",
        "use_cache": False,
        "use_sliding_window": False,
        "vocab_size": vocab_size,
        **SIZES,
    }


def generation_config_dict(eos_token_id: int) -> dict:
    """The release's generation_config.json: Dream's sampler settings (alg "origin", 512 steps)."""
    return {
        "_from_model_config": True,
        "alg": "origin",
        "alg_temp": None,
        "bos_token_id": eos_token_id,
        "eos_token_id": eos_token_id,
        "eps": 0.001,
        "mask_token_id": None,
        "output_history": False,
        "pad_token_id": eos_token_id,
        "steps": 512,
        "temperature": 0.0,
        "top_k": None,
        "top_p": None,
        "transformers_version": "4.46.2",
    }


def write_tokenizer(out: Path) -> dict[str, int]:
    """vocab.json + merges.txt of a byte-level BPE trained on CORPUS, and the special tokens after
    it in tokenizer_config.json; returns {special token: id}."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.model.save(str(out))  # vocab.json, merges.txt
    ids = {token: tok.get_vocab_size() + i for i, token in enumerate(SPECIAL_TOKENS)}
    special = dict(bos_token="<|beginoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    special["mask_token"] = "<|mask|>"
    added = {
        str(i): dict(content=t, lstrip=False, normalized=False, rstrip=False, single_word=False, special=True)
        for t, i in ids.items()
    }
    _write_json(
        out / "tokenizer_config.json",
        {
            "add_prefix_space": False,
            "added_tokens_decoder": added,
            "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
            "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
            **special,
            "chat_template": CHAT_TEMPLATE,
            "clean_up_tokenization_spaces": False,
            "errors": "replace",
            "model_max_length": 131072,
            "split_special_tokens": False,
            "tokenizer_class": "DreamTokenizer",
            "unk_token": None,
        },
    )
    _write_json(
        out / "special_tokens_map.json",
        {"additional_special_tokens": ["<|im_start|>", "<|im_end|>"], **special},
    )
    return ids


def random_state_dict(config: dict, seed: int, std: float = 0.3) -> dict[str, torch.Tensor]:
    """Every key of the release (q/k/v biases included) in its order, N(0, std^2) from `seed`."""
    d, h, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv = config["num_key_value_heads"] * d // config["num_attention_heads"]
    shapes = {"model.embed_tokens.weight": (v, d)}
    for n in range(config["num_hidden_layers"]):
        p = f"model.layers.{n}."
        shapes |= {p + "input_layernorm.weight": (d,), p + "post_attention_layernorm.weight": (d,)}
        shapes |= {p + "mlp.gate_proj.weight": (h, d), p + "mlp.up_proj.weight": (h, d)}
        shapes |= {p + "mlp.down_proj.weight": (d, h)}
        for name, rows in (("q_proj", d), ("k_proj", kv), ("v_proj", kv)):
            shapes |= {p + f"self_attn.{name}.weight": (rows, d), p + f"self_attn.{name}.bias": (rows,)}
        shapes[p + "self_attn.o_proj.weight"] = (d, d)
    shapes["model.norm.weight"] = (d,)
    if not config["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (v, d)
    gen = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=gen) * std for key, shape in shapes.items()}


def save_sharded(tensors: dict[str, torch.Tensor], out: Path, dtype: torch.dtype = torch.bfloat16) -> None:
    """NUM_SHARDS files of consecutive keys, as save_pretrained splits them, and the index."""
    keys = list(tensors)
    per_shard = -(-len(keys) // NUM_SHARDS)
    weight_map, total = {}, 0
    for i in range(NUM_SHARDS):
        name = f"model-{i + 1:05d}-of-{NUM_SHARDS:05d}.safetensors"
        shard = {k: tensors[k].to(dtype).contiguous() for k in keys[i * per_shard : (i + 1) * per_shard]}
        save_file(shard, str(out / name), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(shard, name)
        total += sum(t.numel() * t.element_size() for t in shard.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    _write_json(out / "model.safetensors.index.json", index)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
