"""A tiny random SMDM checkpoint in the released layout, and a TinyLlama-like tokenizer beside it.

    model_file = write_tiny_checkpoint(out)    # out/mdm-6M-tiny-random.safetensors: pass as --model
    tokenizer_dir(model_file)                  # out/tokenizer: pass as --tokenizer

An SMDM release is one bare safetensors file holding lit-gpt's `TransEncoder.state_dict()`, named so
that the size shows (`mdm-<N>M-...`); no config, no tokenizer. The smallest size of SMDM's table,
Diff_LLaMA_6M (6 layers, 4 heads, n_embd 256, 32000 + 1 embedding rows), is what gets written, in
bf16 (about 45 MB): no size outside the real table is invented for tests. The key names and shapes
below are written from the release's module names, not from this project's network.

The tokenizer stands in for TinyLlama's (Llama-2 ids `<unk>` 0, `<s>` 1, `</s>` 2, 32000 ids, no
chat template): a byte-level BPE trained on a few sentences, its vocabulary filled up to 32000 ids
with filler tokens (`~123~`) so that every id the LM head can produce decodes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from models.smdm_config import size_entry

SIZE = "Diff_LLaMA_6M"
FILE_NAME = "mdm-6M-tiny-random.safetensors"
VOCAB_SIZE = 32000
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2 as in Llama-2 / TinyLlama
CORPUS = [
    "The sky is blue because air scatters short wavelengths of sunlight.",
    "A masked diffusion model fills in every blank of the canvas at once.",
    "0 1 2 3 4 5 6 7 8 9 a b c d e f g h i j k l m n o p q r s t u v w x y z",
] * 20


def tokenizer_dir(model_file: Path) -> Path:
    """Where `write_tiny_checkpoint` put the tokenizer of `model_file`."""
    return Path(model_file).parent / "tokenizer"


def smdm_state_shapes(entry: dict) -> dict[str, tuple[int, ...]]:
    """Key -> shape of `TransEncoder.state_dict()` for a lit-gpt config dict (model-formats.md 4)."""
    d, h, layers = entry["n_embd"], entry["intermediate_size"], entry["n_layer"]
    head = d // entry["n_head"]
    vocab = -(-entry["vocab_size"] // entry["padding_multiple"]) * entry["padding_multiple"]
    shapes = {"transformer.wte.weight": (vocab + 1, d)}
    for i in range(layers):
        p = f"transformer.h.{i}."
        shapes[p + "norm_1.weight"] = (d,)
        shapes[p + "attn.attn.weight"] = ((entry["n_head"] + 2 * entry["n_query_groups"]) * head, d)
        shapes[p + "attn.proj.weight"] = (d, d)
        shapes[p + "norm_2.weight"] = (d,)
        shapes[p + "mlp.swiglu.w1.weight"] = (h, d)
        shapes[p + "mlp.swiglu.w2.weight"] = (h, d)
        shapes[p + "mlp.swiglu.w3.weight"] = (d, h)
    shapes["transformer.ln_f.weight"] = (d,)
    shapes["lm_head.weight"] = (vocab, d)
    return shapes


def build_tokenizer():
    """A PreTrainedTokenizerFast with TinyLlama's special ids and exactly VOCAB_SIZE ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    filler = (f"~{i}~" for i in range(VOCAB_SIZE))
    while len(vocab) < VOCAB_SIZE:  # ids the BPE never produces, but decodes
        vocab[next(filler)] = len(vocab)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(data)),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )
    assert len(fast) == VOCAB_SIZE and fast.convert_tokens_to_ids(SPECIAL_TOKENS) == [0, 1, 2]
    return fast


def write_tiny_checkpoint(out_dir: Path, *, seed: int = 0) -> Path:
    """out_dir/mdm-6M-tiny-random.safetensors (weights N(0, 0.3^2) from `seed`, bf16) and its
    tokenizer in out_dir/tokenizer (`tokenizer_dir`). Returns the file: pass it as --model."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    tensors = {
        key: (torch.randn(shape, generator=gen) * 0.3).to(torch.bfloat16)
        for key, shape in smdm_state_shapes(size_entry(SIZE)).items()
    }
    path = out / FILE_NAME
    save_file(tensors, str(path), metadata={"format": "pt"})
    build_tokenizer().save_pretrained(str(tokenizer_dir(path)))
    return path
