"""Fixtures for the HTTP tests: a real `dllm serve` subprocess (uvicorn) on a free loopback port.

The model is the shipped demo checkpoint when models/demo/config.json exists, else the tiny random
checkpoint from tests/conftest.py: switching is the `model_dir` fixture alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from http_helpers import REPO, ServerProcess

DEMO_DIR = REPO / "models" / "demo"


@pytest.fixture(scope="session")
def model_dir(request) -> Path:
    if (DEMO_DIR / "config.json").exists():
        return DEMO_DIR
    return Path(request.getfixturevalue("tiny_ckpt"))


@pytest.fixture(scope="session")
def max_context(model_dir) -> int:
    return json.loads((model_dir / "config.json").read_text())["max_sequence_length"]


@pytest.fixture(scope="session")
def server(model_dir, tmp_path_factory):
    """The shared server: default limits, API key configured."""
    proc = ServerProcess(model_dir, tmp_path_factory.mktemp("server") / "server.log")
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def model_name(model_dir) -> str:
    return model_dir.resolve().name
