"""Shared fixtures: tiny random checkpoints written in exactly the LLaDA layout; the goals module.

Triton decides at decoration time whether to interpret, so TRITON_INTERPRET is set here, before any
test module imports kernels/, whenever no CUDA device is present.
"""

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from models.checkpoint_writer import write_random_checkpoint

CORPUS = [
    "The sky is blue because air scatters short wavelengths of sunlight.",
    "reverse abcde sort 42 7 19 add 12 45 hello world why how what",
    "0 1 2 3 4 5 6 7 8 9 a b c d e f g h i j k l m n o p q r s t u v w x y z",
] * 20


def write_tiny_checkpoint(
    out_dir,
    *,
    seed: int = 0,
    generation_config: dict | None = None,
    max_sequence_length: int = 512,
    rope_theta: float = 500000.0,
):
    """A random LLaDA-layout checkpoint (GQA: 4 heads, 2 kv heads) with a local tokenizer."""
    return write_random_checkpoint(
        out_dir,
        CORPUS,
        320,
        seed=seed,
        std=0.3,
        generation_config=generation_config,
        d_model=64,
        n_heads=4,
        n_kv_heads=2,
        n_layers=2,
        mlp_hidden_size=96,
        max_sequence_length=max_sequence_length,
        rope_theta=rope_theta,
    )


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_llada"))


@pytest.fixture(scope="session")
def ultra_ckpt(tmp_path_factory):
    """The tiny checkpoint with UltraLLaDA's long-context fields: rope_theta 2.8e8, 131072 positions."""
    return write_tiny_checkpoint(
        tmp_path_factory.mktemp("tiny_ultra_llada"), max_sequence_length=131072, rope_theta=2.8e8
    )


@pytest.fixture(scope="session")
def bench_goals():
    """benchmarks/kernels/goals.py as a module (benchmarks/ is not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "kernels" / "goals.py"
    spec = importlib.util.spec_from_file_location("bench_goals", path)
    module = sys.modules["bench_goals"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
