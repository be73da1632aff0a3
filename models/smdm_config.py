"""SMDM (ML-GSAI/SMDM, lit-gpt `TransEncoder`): the size table and the config read from it.

An SMDM release is one bare safetensors file holding `TransEncoder.state_dict()`: no config.json,
no tokenizer. The architecture is chosen by name, `Diff_LLaMA_{N}M`, and the file name carries N
(`mdm-1028M-1600e18.safetensors` -> `Diff_LLaMA_1028M`). With no config in the release, the sizes
below are the one place the numbers can come from: the `Diff_LLaMA` list of SMDM's
lit_gpt/config.py (n_layer, n_head, n_embd, intermediate_size, n_query_groups per name; every entry
shares `_COMMON`). The weights' shapes are still checked against them key by key at load.

Tokens: the TinyLlama (Llama-2 SentencePiece) tokenizer, `</s>` = 2 ends an answer; the mask id is
the padded vocabulary size (32000), the extra embedding row, which the LM head (32000 rows) never
predicts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

from models.errors import CheckpointError
from models.spec import ModelSpec

# Fields every Diff_LLaMA entry shares (lit-gpt Config field names).
_COMMON = {
    "block_size": 2048,
    "vocab_size": 32000,
    "padding_multiple": 64,
    "rotary_percentage": 1.0,
    "parallel_residual": False,
    "bias": False,
    "_norm_class": "FusedRMSNorm",
    "norm_eps": 1e-5,
    "_mlp_class": "LLaMAMLP",
}
# name -> (n_layer, n_head, n_embd, intermediate_size, n_query_groups); the name counts the
# non-embedding parameters in millions.
_SIZES = {
    "Diff_LLaMA_6M": (6, 4, 256, 1024, 4),
    "Diff_LLaMA_19M": (8, 6, 384, 1536, 6),
    "Diff_LLaMA_34M": (8, 8, 512, 2048, 8),
    "Diff_LLaMA_48M": (9, 9, 576, 2304, 9),
    "Diff_LLaMA_66M": (10, 10, 640, 2560, 10),
    "Diff_LLaMA_85M": (13, 10, 640, 2560, 10),
    "Diff_LLaMA_75M": (16, 8, 640, 1600, 8),
    "Diff_LLaMA_113M": (12, 12, 768, 3072, 12),
    "Diff_LLaMA_142M": (15, 12, 768, 3072, 12),
    "Diff_LLaMA_170M": (18, 12, 768, 3072, 12),
    "Diff_LLaMA_180M": (14, 14, 896, 3584, 14),
    "Diff_LLaMA_206M": (16, 14, 896, 3584, 14),
    "Diff_LLaMA_231M": (18, 14, 896, 3584, 14),
    "Diff_LLaMA_268M": (16, 16, 1024, 4096, 16),
    "Diff_LLaMA_302M": (18, 16, 1024, 4096, 16),
    "Diff_LLaMA_336M": (20, 16, 1024, 4096, 16),
    "Diff_LLaMA_472M": (18, 10, 1280, 5120, 10),
    "Diff_LLaMA_551M": (21, 10, 1280, 5120, 10),
    "Diff_LLaMA_571M": (18, 11, 1408, 5632, 11),
    "Diff_LLaMA_629M": (24, 10, 1280, 5120, 10),
    "Diff_LLaMA_666M": (21, 11, 1408, 5632, 11),
    "Diff_LLaMA_717M": (19, 12, 1536, 6144, 12),
    "Diff_LLaMA_761M": (24, 11, 1408, 5632, 11),
    "Diff_LLaMA_831M": (22, 12, 1536, 6144, 12),
    "Diff_LLaMA_944M": (25, 12, 1536, 6144, 12),
    "Diff_LLaMA_1028M": (20, 14, 1792, 7168, 14),
    "Diff_LLaMA_1233M": (24, 14, 1792, 7168, 14),
    "Diff_LLaMA_1476M": (22, 16, 2048, 8192, 16),
    "Diff_LLaMA_1678M": (25, 16, 2048, 8192, 16),
    "Diff_LLaMA_2121M": (28, 17, 2176, 8704, 17),
}
SIZE_NAMES = tuple(_SIZES)

# Options the network implements; anything else is rejected, never approximated.
_MUST_BE = {
    "rotary_percentage": (1.0,),
    "parallel_residual": (False,),
    "bias": (False,),
    "_norm_class": ("FusedRMSNorm", "RMSNorm"),
    "_mlp_class": ("LLaMAMLP",),
}
_FIELDS = {"name", "block_size", "vocab_size", "padding_multiple", "n_layer", "n_head", "n_embd"}
_FIELDS |= {"intermediate_size", "n_query_groups", "norm_eps", *_MUST_BE}

# SMDM's file names: mdm-1028M-1600e18.safetensors, mdm-1028M-3300e18-rsl-gsm8k.safetensors, ...
_FILE_NAME = re.compile(r"mdm-(\d+)M-")
EOS_TOKEN_ID = 2  # TinyLlama / Llama-2 `</s>`
_EMBEDDING = "transformer.wte.weight"


def size_entry(name: str) -> dict:
    """The lit-gpt config dict of a Diff_LLaMA size, or KeyError."""
    n_layer, n_head, n_embd, intermediate, groups = _SIZES[name]
    return {
        "name": name,
        **_COMMON,
        "n_layer": n_layer,
        "n_head": n_head,
        "n_embd": n_embd,
        "intermediate_size": intermediate,
        "n_query_groups": groups,
    }


def size_from_file_name(path: Path) -> str | None:
    """`mdm-1028M-...` -> "Diff_LLaMA_1028M"; None when the name does not follow SMDM's pattern."""
    match = _FILE_NAME.match(path.name)
    return f"Diff_LLaMA_{match.group(1)}M" if match else None


def size_of_shapes(path: Path) -> str | None:
    """The table's size whose (n_layer, n_embd) the file's keys show (each pair is unique in the
    table), None when the file cannot tell (unreadable: the loader says why); CheckpointError for a
    file without SMDM's embedding key (another family's weights file given alone)."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            keys = set(f.keys())
            wte = f.get_slice(_EMBEDDING).get_shape() if _EMBEDDING in keys else None
    except Exception:  # a corrupt header: left to the loader's message
        return None
    if wte is None:
        raise CheckpointError(
            f"{path}: no key '{_EMBEDDING}', so not an SMDM state dict (the other families load from "
            f"their checkpoint directory)"
        )
    n_layer = len({k.split(".")[2] for k in keys if k.startswith("transformer.h.")})
    names = [n for n, (layers, _, d, _, _) in _SIZES.items() if (layers, d) == (n_layer, wte[1])]
    return names[0] if names else None


@dataclass(frozen=True)
class SMDMConfig:
    name: str
    n_layer: int
    n_head: int
    n_embd: int
    intermediate_size: int
    n_query_groups: int
    padded_vocab_size: int  # rows of the LM head; the embedding has one more (the mask)
    block_size: int
    norm_eps: float
    rope_base: float = 10000.0  # lit-gpt build_rope_cache's default; SMDM never changes it

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mask_token_id(self) -> int:
        return self.padded_vocab_size

    def model_spec(self) -> ModelSpec:
        """Unshifted logits over the LM head's classes (the mask excluded), no time input."""
        return ModelSpec(
            family="smdm",
            mask_token_id=self.mask_token_id,
            eos_token_id=EOS_TOKEN_ID,
            vocab_size=self.padded_vocab_size,
            max_sequence_length=self.block_size,
            n_layers=self.n_layer,
            n_kv_heads=self.n_query_groups,
            head_dim=self.head_size,
            stop_texts=("</s>",),
        )

    @classmethod
    def for_file(cls, path: Path, size: str | None = None) -> SMDMConfig:
        """The config of a bare SMDM file: the `size` given (--smdm-size), else the file's name.
        A size the file's shapes contradict is refused here, naming the size that fits them."""
        fits = size_of_shapes(path)
        hint = f" (its shapes fit {fits})" if fits else ""
        if size is None:
            size = size_from_file_name(path)
            if size is None:
                raise CheckpointError(
                    f"{path}: cannot tell the SMDM size from the file name (SMDM names files "
                    f"mdm-<N>M-...); pass --smdm-size Diff_LLaMA_<N>M{hint}"
                )
            source = f"{path} (size {size} from the file name)"
        else:
            source = f"{path} (--smdm-size {size})"
        if size not in _SIZES:
            raise CheckpointError(f"{source}: no such SMDM size{hint} (known: {', '.join(SIZE_NAMES)})")
        if fits is not None and fits != size:
            raise CheckpointError(
                f"{source}: the weights are {fits}'s, not {size}'s: pass --smdm-size {fits}"
            )
        return cls.from_dict(size_entry(size), source)

    @classmethod
    def from_dict(cls, raw: dict, source: str) -> SMDMConfig:
        """A lit-gpt config dict (the fields of a `Diff_LLaMA` entry), checked field by field."""
        unknown = sorted(set(raw) - _FIELDS)
        if unknown:
            raise CheckpointError(f"{source}: unknown SMDM config field '{unknown[0]}'")
        missing = sorted(_FIELDS - set(raw))
        if missing:
            raise CheckpointError(f"{source}: missing SMDM config field '{missing[0]}'")
        for key, allowed in _MUST_BE.items():
            if raw[key] not in allowed:
                raise CheckpointError(
                    f"{source}: {key}={raw[key]!r} is not supported (only {', '.join(map(repr, allowed))})"
                )
        n_head, n_embd, groups = int(raw["n_head"]), int(raw["n_embd"]), int(raw["n_query_groups"])
        if n_embd % n_head:
            raise CheckpointError(f"{source}: n_head {n_head} must divide n_embd {n_embd}")
        if groups < 1 or n_head % groups:
            raise CheckpointError(f"{source}: n_query_groups {groups} must divide n_head {n_head}")
        multiple = int(raw["padding_multiple"])
        padded = -(-int(raw["vocab_size"]) // multiple) * multiple  # lit-gpt find_multiple
        return cls(
            name=str(raw["name"]),
            n_layer=int(raw["n_layer"]),
            n_head=n_head,
            n_embd=n_embd,
            intermediate_size=int(raw["intermediate_size"]),
            n_query_groups=groups,
            padded_vocab_size=padded,
            block_size=int(raw["block_size"]),
            norm_eps=float(raw["norm_eps"]),
        )
