"""Safetensors loading: one file or shards through model.safetensors.index.json.

The network is built on the meta device, then each parameter is replaced by the tensor read from
its shard, converted to the target dtype and device on the way, so the weights exist once in memory.
Shards of real LLaDA checkpoints group tensors by kind, not by layer: the index is always followed.

What goes where is the network's `checkpoint_layout()` (models/spec.py): checkpoint key -> parameter,
whole or a slice of a stacked parameter (per-expert tensors of a MoE into one [E, ...] weight), or
None for a key the release carries that the network does not use (a persistent rotary buffer).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from models.config import read_json
from models.errors import CheckpointError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


def weight_map(ckpt_dir: Path) -> dict[str, str]:
    """Checkpoint key -> shard file name (`ckpt_dir` may also be one bare safetensors file)."""
    if ckpt_dir.is_file():
        with _open(ckpt_dir) as f:
            return {key: ckpt_dir.name for key in f.keys()}
    index_path = ckpt_dir / INDEX_FILE
    if index_path.exists():
        mapping = read_json(index_path).get("weight_map")
        if not isinstance(mapping, dict):
            raise CheckpointError(f"{index_path}: missing 'weight_map' object")
        bad = next((k for k, v in mapping.items() if not isinstance(v, str) or not v), None)
        if bad is not None:
            raise CheckpointError(
                f"{index_path}: key '{bad}' maps to {mapping[bad]!r}, not a shard file name"
            )
        return mapping
    single = ckpt_dir / SINGLE_FILE
    if single.exists():
        with _open(single) as f:
            return {key: SINGLE_FILE for key in f.keys()}
    raise CheckpointError(f"{ckpt_dir}: no {SINGLE_FILE} or {INDEX_FILE} found")


def load_weights(model: nn.Module, ckpt_dir: Path, dtype: torch.dtype, device: torch.device) -> None:
    """Assign every parameter of `model` from the checkpoint; fail naming file and key otherwise."""
    mapping = weight_map(ckpt_dir)
    if ckpt_dir.is_file():
        source, folder = ckpt_dir, ckpt_dir.parent
    else:
        source = ckpt_dir / (INDEX_FILE if (ckpt_dir / INDEX_FILE).exists() else SINGLE_FILE)
        folder = ckpt_dir
    layout = model.checkpoint_layout()
    missing = sorted(k for k, t in layout.items() if t is not None and k not in mapping)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{source}: missing key '{missing[0]}'{more}")
    unexpected = sorted(k for k in mapping if k not in layout)
    if unexpected:
        raise CheckpointError(f"{source}: unexpected key '{unexpected[0]}' (not part of this architecture)")
    by_shard: dict[str, list[str]] = defaultdict(list)
    for key, target in layout.items():
        if target is not None:
            by_shard[mapping[key]].append(key)
    for shard, keys in sorted(by_shard.items()):
        path = folder / shard
        if not path.exists():
            raise CheckpointError(f"{path}: shard file missing (it should hold '{keys[0]}')")
        with _open(path) as f:
            present = set(f.keys())
            for key in keys:
                if key not in present:
                    raise CheckpointError(f"{path}: key '{key}' listed in the index is not in this file")
                _assign(model, layout[key], f.get_tensor(key), dtype, device, f"{path}: key '{key}'")
    unfilled = [name for name, p in model.named_parameters() if p.is_meta]
    if unfilled:  # a layout that misses a parameter: the network's bug, named before it runs
        raise CheckpointError(f"{source}: no checkpoint key fills parameter '{unfilled[0]}'")


def _open(path: Path):
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{path}: cannot read safetensors file ({exc})") from None


def _assign(model: nn.Module, target, tensor, dtype, device, where: str) -> None:
    module_name, _, param_name = target.param.rpartition(".")
    module = model.get_submodule(module_name)
    param = getattr(module, param_name)
    expected = tuple(param.shape if target.index is None else param[target.index].shape)
    if tuple(tensor.shape) != expected:
        raise CheckpointError(f"{where}: shape {tuple(tensor.shape)}, expected {expected}")
    if not tensor.is_floating_point():
        raise CheckpointError(f"{where}: dtype {tensor.dtype} is not a floating point type")
    value = tensor.to(device=device, dtype=dtype)
    if target.index is None:
        module._parameters[param_name] = nn.Parameter(value, requires_grad=False)
        return
    if param.is_meta:  # the first slice of a stacked parameter: allocate it (the layout fills it all)
        param = nn.Parameter(torch.empty(param.shape, dtype=dtype, device=device), requires_grad=False)
        module._parameters[param_name] = param
    param.data[target.index] = value
