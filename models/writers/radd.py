"""A tiny random RADD checkpoint in the released layout, and a GPT-2-like tokenizer beside it.

    model_dir = write_tiny_checkpoint(out)     # out/model: pass as --model
    tokenizer_dir(model_dir)                   # out/tokenizer: pass as --tokenizer

The checkpoint directory is what RADD's `PyTorchModelHubMixin` writes: config.json holding the
training (hydra) config dict with the nesting of the release's configs/config.yaml and
configs/model/*_radd.yaml (`tokens`, `model`, `noise`, ...; no `architectures`), model.safetensors
with RADD's keys (the persistent `rotary_emb.inv_freq` buffer included) and the mixin's model card.
RADD ships no tokenizer (it uses GPT-2's), so the tokenizer goes to a separate directory: a byte-level
BPE whose last id, `tokens - 1`, is `<|endoftext|>` as in GPT-2 (the mask id is `tokens`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

CORPUS = [
    "The sky is blue because air scatters short wavelengths of sunlight.",
    "Once upon a time there was a small model that learned to fill in the blanks.",
    "0 1 2 3 4 5 6 7 8 9 a b c d e f g h i j k l m n o p q r s t u v w x y z",
] * 20

EOS_TEXT = "<|endoftext|>"


def radd_config_dict(*, tokens: int, hidden_size: int, n_blocks: int, n_heads: int, length: int) -> dict:
    """The hydra config as RADD's hub mixin saves it (keys sorted), with the given model sizes."""
    config = {
        "ngpus": 4,
        "tokens": tokens,
        "gpt_dir": "gpt2-large",
        "outdir": "../output",
        "training": {
            "batch_size": 512,
            "accum": 16,
            "n_iters": 1000001,
            "snapshot_freq": 50000,
            "log_freq": 50,
            "eval_freq": 100,
            "snapshot_freq_for_preemption": 10000,
            "weight": "standard",
            "snapshot_sampling": True,
            "ema": 0.9999,
            "loss_type": "t_DCE",
        },
        "data": {"train": "openwebtext", "valid": "wikitext103", "cache_dir": "data"},
        "noise": {"type": "loglinear", "sigma_min": 1e-4, "sigma_max": 20},
        "sampling": {"predictor": "euler", "steps": 1024},
        "eval": {"batch_size": 512, "perplexity": True, "perplexity_batch_size": 16},
        "optim": {
            "weight_decay": 0,
            "optimizer": "AdamW",
            "lr": 3e-4,
            "beta1": 0.9,
            "beta2": 0.999,
            "eps": 1e-8,
            "warmup": 2500,
            "grad_clip": 1.0,
        },
        "model": {
            "name": "tiny_radd",
            "type": "ddit_wot",
            "hidden_size": hidden_size,
            "cond_dim": 128,
            "length": length,
            "n_blocks": n_blocks,
            "n_heads": n_heads,
            "dropout": 0.02,
            "use_checkpoint": False,
            "dtype": "float16",
        },
    }
    return json.loads(json.dumps(config, sort_keys=True))


def radd_state_dict(config: dict, *, seed: int = 0, std: float = 0.3) -> dict[str, torch.Tensor]:
    """Random tensors under RADD's key names and shapes (fp32), N(0, std^2) from `seed`; the norm
    weights and biases are drawn around 1 like the released LayerNormWot's ones-initialised ones."""
    tokens, m = config["tokens"], config["model"]
    d, rows, head_dim = m["hidden_size"], config["tokens"] + 1, m["hidden_size"] // m["n_heads"]
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, around: float = 0.0) -> torch.Tensor:
        return around + torch.randn(shape, generator=gen) * std

    sd = {"vocab_embed.embedding": rand(rows, d)}
    sd["rotary_emb.inv_freq"] = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    for i in range(m["n_blocks"]):
        p = f"blocks.{i}."
        sd[p + "norm1.weight"], sd[p + "norm1.bias"] = rand(d, around=1.0), rand(d, around=1.0)
        sd[p + "attn_qkv.weight"] = rand(3 * d, d)
        sd[p + "attn_out.weight"] = rand(d, d)
        sd[p + "norm2.weight"], sd[p + "norm2.bias"] = rand(d, around=1.0), rand(d, around=1.0)
        sd[p + "mlp.0.weight"], sd[p + "mlp.0.bias"] = rand(4 * d, d), rand(4 * d)
        sd[p + "mlp.2.weight"], sd[p + "mlp.2.bias"] = rand(d, 4 * d), rand(d)
    sd["output_layer.norm_final.weight"] = rand(d, around=1.0)
    sd["output_layer.norm_final.bias"] = rand(d, around=1.0)
    sd["output_layer.linear.weight"], sd["output_layer.linear.bias"] = rand(rows, d), rand(rows)
    assert sd["output_layer.linear.weight"].shape[0] == tokens + 1
    return sd


def build_gpt2_like_tokenizer(tokens: int, corpus: list[str] = CORPUS):
    """A byte-level BPE of exactly `tokens` ids whose last one is `<|endoftext|>` (GPT-2's layout:
    50256 of 50257), bos = eos = unk = that token, no chat template (GPT-2 has none)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=tokens - 1, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_special_tokens([EOS_TEXT])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS_TEXT,
        eos_token=EOS_TEXT,
        unk_token=EOS_TEXT,
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
    )
    if len(fast) != tokens or fast.convert_tokens_to_ids(EOS_TEXT) != tokens - 1:
        raise ValueError(f"the corpus gives {len(fast)} tokens, not {tokens}: lower `tokens`")
    return fast


MODEL_CARD = """---
tags:
- model_hub_mixin
- pytorch_model_hub_mixin
---

This model has been pushed to the Hub using the [PytorchModelHubMixin] integration.
"""


def tokenizer_dir(model_dir: Path) -> Path:
    """Where `write_tiny_checkpoint` put the tokenizer of the checkpoint it returned."""
    return Path(model_dir).parent / "tokenizer"


def write_tiny_checkpoint(
    out_dir: Path, *, seed: int = 0, tokens: int = 300, length: int = 1024, std: float = 0.3
) -> Path:
    """A random RADD checkpoint (hidden 64, 2 blocks, 4 heads, `tokens` classes + the mask row,
    `length` positions) in out_dir/model, its tokenizer in out_dir/tokenizer (`tokenizer_dir`).
    Returns out_dir/model: pass it as --model, and tokenizer_dir(it) as --tokenizer."""
    out = Path(out_dir)
    model_dir, tok_dir = out / "model", out / "tokenizer"
    model_dir.mkdir(parents=True, exist_ok=True)
    config = radd_config_dict(tokens=tokens, hidden_size=64, n_blocks=2, n_heads=4, length=length)
    (model_dir / "config.json").write_text(json.dumps(config, sort_keys=True, indent=2))
    tensors = {k: v.contiguous() for k, v in radd_state_dict(config, seed=seed, std=std).items()}
    save_file(tensors, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    (model_dir / "README.md").write_text(MODEL_CARD)
    build_gpt2_like_tokenizer(tokens).save_pretrained(str(tok_dir))
    return model_dir
