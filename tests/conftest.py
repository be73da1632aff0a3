"""Shared fixtures: tiny random checkpoints written in exactly the LLaDA layout.

Triton decides at decoration time whether to interpret, so TRITON_INTERPRET is set here, before any
test module imports kernels/, whenever no CUDA device is present.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from models.checkpoint_writer import (  # noqa: E402
    SPECIAL_TOKENS,
    build_tokenizer,
    llada_config_dict,
    save_llada_checkpoint,
)
from models.config import LLaDAConfig  # noqa: E402
from models.llada import LLaDAModel  # noqa: E402

CORPUS = [
    "The sky is blue because air scatters short wavelengths of sunlight.",
    "reverse abcde sort 42 7 19 add 12 45 hello world why how what",
    "0 1 2 3 4 5 6 7 8 9 a b c d e f g h i j k l m n o p q r s t u v w x y z",
] * 20


def write_tiny_checkpoint(
    out_dir,
    *,
    seed: int = 0,
    n_kv_heads: int = 2,
    std: float = 0.3,
    vocab_size: int = 320,
    generation_config: dict | None = None,
):
    """A random LLaDA-layout checkpoint with a local tokenizer; returns the directory."""
    tok = build_tokenizer(CORPUS, vocab_size)
    ids = tok.convert_tokens_to_ids(SPECIAL_TOKENS)
    cfg = llada_config_dict(
        d_model=64,
        n_heads=4,
        n_kv_heads=n_kv_heads,
        n_layers=2,
        mlp_hidden_size=96,
        vocab_size=len(tok),
        mask_token_id=ids[2],
        eos_token_id=ids[1],
        max_sequence_length=512,
    )
    gen = torch.Generator().manual_seed(seed)
    model = LLaDAModel(LLaDAConfig.from_dict(cfg))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    save_llada_checkpoint(model.state_dict(), cfg, out_dir, num_shards=3, generation_config=generation_config)
    tok.save_pretrained(str(out_dir))
    return out_dir


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_llada"))
