"""Model registry keyed by config.json `architectures`, and the one entry point that loads a model.

Dispatch is on `architectures`, never on `model_type` (LLaDA-MoE ships model_type "llada"). A family
is a (config reader, network) pair following the contract in models/spec.py; `load_model` turns any of
them into a `LoadedModel` whose `spec` is all the engine reads.

RADD releases are `PyTorchModelHubMixin` directories whose config.json is the training config and
names no architecture: such a file (no `architectures`, a `model` object and `tokens`) dispatches to
"RADD" (models/radd.py `is_radd_config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from models.config import LLaDAConfig, architecture_of, read_json
from models.dream import DreamConfig, DreamModel
from models.errors import CheckpointError
from models.llada import LLaDAModel
from models.llada_moe import LLaDAMoEModel
from models.llada_moe_config import LLaDAMoEConfig
from models.loader import load_weights
from models.radd import ARCHITECTURE as RADD_ARCHITECTURE
from models.radd import RADDConfig, RADDModel, is_radd_config
from models.smdm import SMDMModel
from models.smdm_config import SMDMConfig
from models.spec import ModelSpec
from models.tokenizer import load_tokenizer, special_token_id

MODEL_REGISTRY = {
    "LLaDAModelLM": (LLaDAConfig, LLaDAModel),
    "DreamModel": (DreamConfig, DreamModel),
    RADD_ARCHITECTURE: (RADDConfig, RADDModel),
    "LLaDAMoEModelLM": (LLaDAMoEConfig, LLaDAMoEModel),
    "FusedLLaDAMoEModelLM": (LLaDAMoEConfig, LLaDAMoEModel),  # dInfer's fused experts
}
# A bare .safetensors file (no config.json) is SMDM, the one family released that way: its size
# comes from the file name or --smdm-size (models/smdm_config.py).
BARE_FILE_FAMILY = (SMDMConfig, SMDMModel)

DEMO_MODEL_DIR = Path(__file__).resolve().parent / "demo"

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class LoadedModel:
    path: Path
    config: object  # the family's own config (LLaDAConfig, ...): network code only, never the engine
    model: torch.nn.Module
    tokenizer: object | None
    device: torch.device
    dtype: torch.dtype
    spec: ModelSpec  # what the engine reads; spec.stop_token_ids complete (EOS first)
    generation_defaults: dict = field(default_factory=dict)

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        return self.spec.stop_token_ids


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


def read_config(ckpt: Path, smdm_size: str | None = None):
    """(family config, network class) of a checkpoint directory, dispatched on `architectures`, or
    of a bare SMDM .safetensors file (`smdm_size`: its Diff_LLaMA size when the name does not say)."""
    if ckpt.is_file() and ckpt.suffix == ".safetensors":
        config_cls, model_cls = BARE_FILE_FAMILY
        return config_cls.for_file(ckpt, smdm_size), model_cls
    if smdm_size is not None:
        raise CheckpointError(f"{ckpt}: --smdm-size applies only to a bare SMDM .safetensors file")
    if not ckpt.is_dir():
        raise CheckpointError(f"{ckpt}: model directory not found")
    raw = read_json(ckpt / "config.json")
    arch = RADD_ARCHITECTURE if is_radd_config(raw) else architecture_of(raw, str(ckpt / "config.json"))
    if arch == "LLaDAModelLM" and "num_experts" in raw:
        # LLaDA-MoE ships model_type "llada"; a copy whose `architectures` was rewritten to the dense
        # name still has `num_experts`, which no dense LLaDA config carries (its fields differ too).
        arch = "LLaDAMoEModelLM"
    if arch not in MODEL_REGISTRY:
        raise CheckpointError(
            f"{ckpt / 'config.json'}: unknown architecture '{arch}' in field 'architectures' "
            f"(supported: {', '.join(MODEL_REGISTRY)})"
        )
    config_cls, model_cls = MODEL_REGISTRY[arch]
    return config_cls.from_dict(raw, source=str(ckpt / "config.json")), model_cls


def load_model(
    path: str | Path,
    dtype: str = "auto",
    device: str = "auto",
    tokenizer: str | Path | None = None,
    smdm_size: str | None = None,
) -> LoadedModel:
    """Load config, weights, tokenizer and generation defaults from a local checkpoint.

    `tokenizer`: a directory to load the tokenizer from, for releases that ship none (RADD, SMDM);
    default: the checkpoint's own directory. `smdm_size`: see `read_config`."""
    ckpt = Path(path)
    config, model_cls = read_config(ckpt, smdm_size)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    with torch.device("meta"):
        model = model_cls(config)
    load_weights(model, ckpt, dt, dev)
    model.eval()
    folder = ckpt if ckpt.is_dir() else ckpt.parent
    tok_dir = Path(tokenizer) if tokenizer is not None else folder
    if tokenizer is not None and not tok_dir.is_dir():
        raise CheckpointError(f"{tok_dir}: tokenizer directory not found")
    tok = load_tokenizer(tok_dir)
    if hasattr(config, "with_tokenizer"):  # a family whose special ids may come from the tokenizer
        config = config.with_tokenizer(tok)
    gen_path = folder / "generation_config.json"
    gen = read_json(gen_path) if gen_path.exists() else {}
    if hasattr(config, "generation_defaults"):  # a family whose generation_config speaks its own keys
        gen = config.generation_defaults(gen)
    spec = config.model_spec()
    return LoadedModel(
        path=ckpt,
        config=config,
        model=model,
        tokenizer=tok,
        device=dev,
        dtype=dt,
        spec=replace(spec, stop_token_ids=stop_ids(spec, tok, gen, str(gen_path))),
        generation_defaults={**spec.sampling_defaults, **gen},
    )


def stop_ids(
    spec: ModelSpec, tokenizer, gen: dict, source: str = "generation_config.json"
) -> tuple[int, ...]:
    """EOS first, then the family's stop tokens the vocabulary has, then generation_config's eos ids
    (`source`: that file, named when one of them is not a token id)."""
    stops = [spec.eos_token_id]
    stops += [t for t in (special_token_id(tokenizer, s) for s in spec.stop_texts) if t is not None]
    extra = gen.get("eos_token_id")
    for t in extra if isinstance(extra, list) else [] if extra is None else [extra]:
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < spec.vocab_size:
            raise CheckpointError(
                f"{source}: field 'eos_token_id' holds {t!r}, not a token id in [0, {spec.vocab_size})"
            )
        stops.append(t)
    return tuple(dict.fromkeys(int(t) for t in stops))
