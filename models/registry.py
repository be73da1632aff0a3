"""Model registry keyed by config.json `architectures`, and the one entry point that loads a model.

Dispatch is on `architectures`, never on `model_type` (LLaDA-MoE ships model_type "llada").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from models.config import LLaDAConfig, architecture_of, read_json
from models.errors import CheckpointError
from models.llada import LLaDAModel
from models.loader import load_weights
from models.tokenizer import load_tokenizer, special_token_id

MODEL_REGISTRY = {"LLaDAModelLM": (LLaDAConfig, LLaDAModel)}

DEMO_MODEL_DIR = Path(__file__).resolve().parent / "demo"

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class LoadedModel:
    path: Path
    config: LLaDAConfig
    model: torch.nn.Module
    tokenizer: object | None
    device: torch.device
    dtype: torch.dtype
    # Token ids that end an answer: EOS from config.json, EoT and generation_config's eos ids.
    stop_token_ids: tuple[int, ...] = ()
    generation_defaults: dict = field(default_factory=dict)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of auto, {', '.join(_DTYPES)}; got {dtype!r}")
    return _DTYPES[dtype]


def load_model(path: str | Path, dtype: str = "auto", device: str = "auto") -> LoadedModel:
    """Load config, weights, tokenizer and generation defaults from a local checkpoint directory."""
    ckpt = Path(path)
    if not ckpt.is_dir():
        raise CheckpointError(f"{ckpt}: model directory not found")
    raw = read_json(ckpt / "config.json")
    arch = architecture_of(raw, str(ckpt / "config.json"))
    if arch not in MODEL_REGISTRY:
        raise CheckpointError(
            f"{ckpt / 'config.json'}: unknown architecture '{arch}' in field 'architectures' "
            f"(supported: {', '.join(MODEL_REGISTRY)})"
        )
    config_cls, model_cls = MODEL_REGISTRY[arch]
    config = config_cls.from_dict(raw, source=str(ckpt / "config.json"))
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    with torch.device("meta"):
        model = model_cls(config)
    load_weights(model, ckpt, dt, dev)
    model.eval()
    tokenizer = load_tokenizer(ckpt)
    gen_path = ckpt / "generation_config.json"
    gen = read_json(gen_path) if gen_path.exists() else {}
    stops = [config.eos_token_id]
    eot = special_token_id(tokenizer, "<|eot_id|>")
    if eot is not None:
        stops.append(eot)
    extra = gen.get("eos_token_id", [])
    stops += extra if isinstance(extra, list) else [extra]
    return LoadedModel(
        path=ckpt,
        config=config,
        model=model,
        tokenizer=tokenizer,
        device=dev,
        dtype=dt,
        stop_token_ids=tuple(dict.fromkeys(int(t) for t in stops)),
        generation_defaults=gen,
    )
