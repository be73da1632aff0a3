"""LLaDA config.json, read field by field.

The original LLaDA config class falls back on GPT-2-like defaults for absent fields (d_model 768,
rope off, weight tying on, ...). Loading a real checkpoint with such a default silently produces
noise, so here every field the network depends on must be present in the file, and every option we
do not implement is rejected with a message naming the file and the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from models.errors import CheckpointError
from models.spec import ModelSpec

# Options the network code implements; anything else is rejected, never approximated.
_SUPPORTED = {
    "block_type": {"llama"},
    "activation_type": {"silu"},
    "layer_norm_type": {"rms"},
}
_MUST_BE = {  # key -> the only value we implement
    "rope": True,
    "alibi": False,
    "include_bias": False,
    "attention_layer_norm": False,
    "multi_query_attention": (None, False),
    "block_group_size": 1,
}


@dataclass(frozen=True)
class LLaDAConfig:
    d_model: int
    n_heads: int
    n_kv_heads: int
    n_layers: int
    mlp_hidden_size: int
    vocab_size: int
    embedding_size: int
    max_sequence_length: int
    rope_theta: float
    rms_norm_eps: float
    weight_tying: bool
    input_emb_norm: bool
    scale_logits: bool
    mask_token_id: int
    eos_token_id: int
    pad_token_id: int
    architecture: str = "LLaDAModelLM"

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def model_spec(self) -> ModelSpec:
        """LLaDA: unshifted logits over every embedding row (the reference samples from all of them),
        no time input; answers end with EOS or <|eot_id|> (Instruct)."""
        return ModelSpec(
            family="llada",
            mask_token_id=self.mask_token_id,
            eos_token_id=self.eos_token_id,
            vocab_size=self.embedding_size,
            max_sequence_length=self.max_sequence_length,
            n_layers=self.n_layers,
            n_kv_heads=self.n_kv_heads,
            head_dim=self.head_dim,
            stop_texts=("<|eot_id|>",),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> LLaDAConfig:
        path = Path(path)
        raw = read_json(path)
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config.json") -> LLaDAConfig:
        get = field_getter(raw, source)

        for key, allowed in _SUPPORTED.items():
            value = get(key)
            if not isinstance(value, str) or value not in allowed:
                raise CheckpointError(f"{source}: unsupported {key} {value!r} (supported: {sorted(allowed)})")
        for key, only in _MUST_BE.items():
            accepted = only if isinstance(only, tuple) else (only,)
            if key in raw and raw[key] not in accepted:
                raise CheckpointError(f"{source}: {key}={raw[key]!r} is not supported (only {accepted[0]!r})")
        if "rope" not in raw:
            raise CheckpointError(f"{source}: missing required field 'rope'")

        d_model, n_heads = get("d_model", kind=int, minimum=1), get("n_heads", kind=int, minimum=1)
        n_kv_heads = get("n_kv_heads", n_heads, kind=int, minimum=1)
        if d_model % n_heads:
            raise CheckpointError(f"{source}: n_heads {n_heads} must divide d_model {d_model}")
        if n_heads % n_kv_heads:
            raise CheckpointError(f"{source}: n_kv_heads {n_kv_heads} must divide n_heads {n_heads}")
        mlp_hidden = get("mlp_hidden_size", None, kind=int, minimum=1)
        if mlp_hidden is None:
            mlp_hidden = get("mlp_ratio", kind=int, minimum=1) * d_model
        vocab_size = get("vocab_size", kind=int, minimum=1)
        cfg = cls(
            d_model=d_model,
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            n_layers=get("n_layers", kind=int, minimum=1),
            mlp_hidden_size=mlp_hidden,
            vocab_size=vocab_size,
            embedding_size=get("embedding_size", vocab_size, kind=int),
            max_sequence_length=get("max_sequence_length", kind=int, minimum=1),
            rope_theta=get("rope_theta", kind=float),
            rms_norm_eps=get("rms_norm_eps", kind=float),
            weight_tying=get("weight_tying", kind=bool),
            input_emb_norm=get("input_emb_norm", False, kind=bool),
            scale_logits=get("scale_logits", False, kind=bool),
            mask_token_id=get("mask_token_id", kind=int, minimum=0),
            eos_token_id=get("eos_token_id", kind=int, minimum=0),
            pad_token_id=get("pad_token_id", get("eos_token_id"), kind=int, minimum=0),
            architecture=architecture_of(raw, source),
        )
        if cfg.mask_token_id == cfg.pad_token_id:
            raise CheckpointError(f"{source}: mask_token_id must differ from pad_token_id")
        if cfg.embedding_size < cfg.vocab_size:
            raise CheckpointError(f"{source}: embedding_size is smaller than vocab_size")
        for key in ("mask_token_id", "eos_token_id"):
            if getattr(cfg, key) >= cfg.embedding_size:
                raise CheckpointError(
                    f"{source}: {key} {getattr(cfg, key)} is outside the embedding "
                    f"({cfg.embedding_size} rows)"
                )
        return cfg


_REQUIRED = object()


def field_getter(raw: dict, source: str):
    """get(key) -> raw[key], a CheckpointError naming `source` and the key when it is absent or null;
    get(key, default) -> the default instead. Config readers of every family read fields with it.

    `kind` (int, float or bool) checks the file's value: an int field takes no float, string or
    boolean, a float field no string or boolean, a bool field only true/false (bool("false") would
    be True); `minimum` is the least value a number may have (sizes >= 1, token ids >= 0)."""

    def get(key: str, default=_REQUIRED, kind: type | None = None, minimum: float | None = None):
        if key not in raw or raw[key] is None:
            if default is _REQUIRED:
                raise CheckpointError(f"{source}: missing required field '{key}'")
            return default
        value = raw[key]
        if kind is None:
            return value
        ok = {int: (int,), float: (int, float), bool: (bool,)}[kind]
        if not isinstance(value, ok) or (kind is not bool and isinstance(value, bool)):
            raise CheckpointError(f"{source}: field '{key}' must be {_KIND_NAMES[kind]}; got {value!r}")
        if minimum is not None and value < minimum:
            raise CheckpointError(f"{source}: field '{key}' must be at least {minimum}; got {value!r}")
        return kind(value)

    return get


_KIND_NAMES = {int: "an integer", float: "a number", bool: "true or false"}


def architecture_of(raw: dict, source: str) -> str:
    archs = raw.get("architectures")
    if not isinstance(archs, list) or not archs or not isinstance(archs[0], str):
        raise CheckpointError(f"{source}: field 'architectures' must be a list naming the model class")
    return archs[0]


def read_json(path: Path) -> dict:
    """Read a JSON object, turning every failure into a CheckpointError that names the file."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object at top level")
    return data
