"""`dllm serve` start-up errors, environment defaults, and the protocol's coverage of SamplingParams."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import fields

import pytest
import torch
from http_helpers import REPO, free_port

from engine.cli import engine_kwargs
from engine.engine import EngineConfig
from engine.sampling_params import SamplingParams
from server import cli
from server.protocol import ChatCompletionRequest, CompletionRequest


def serve(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # No TRITON_INTERPRET (tests/conftest.py sets it on CPU hosts): `serve` must see the real host.
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DLLM_", "TRITON_INTERPRET"))}
    full_env.update(PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "serve", *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_model_is_a_one_line_error(tmp_path):
    r = serve("--model", str(tmp_path / "nope"), "--port", "1")
    assert r.returncode == 2
    assert "model directory not found" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "flags,needs_cpu_host",
    [(("--kernels", "triton"), True), (("--device", "cuda"), True), (("--device", "tpu"), False)],
)
def test_engine_that_cannot_run_fails_at_start(flags, needs_cpu_host):
    """A warm-up step runs before the port opens: an engine that cannot step is one line, status 2."""
    if needs_cpu_host and torch.cuda.is_available():
        pytest.skip("needs a host without CUDA")
    r = serve(*flags, "--port", str(free_port()), "--log-level", "warning")
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("dllm serve: error: ") and flags[1] in r.stderr, r.stderr


@pytest.mark.parametrize("var,value", [("DLLM_PORT", "eighty"), ("DLLM_MAX_WAITING", "1.5")])
def test_bad_environment_value_is_blamed_on_the_variable(var, value):
    r = serve(env={var: value})
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"dllm serve: error: environment variable {var}={value!r}"), r.stderr


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--header-timeout", "0"], "--header-timeout must be > 0"),
        (["--max-connections", "1"], "--max-connections must be >= 2"),
        (["--threads", "0"], "argument --threads: expected an integer >= 1"),
    ],
)
def test_bad_connection_flags_are_one_line(flags, message):
    r = serve(*flags)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_http_flags_and_their_environment(monkeypatch):
    for key in cli.ENV_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DLLM_ALLOWED_HOSTS", "api.example, gpu-1")
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args([])
    assert args.allowed_hosts == ["api.example", "gpu-1"] and args.allowed_origins == []
    assert (args.header_timeout, args.max_connections, args.threads) == (10.0, None, None)
    args = parser.parse_args(["--allowed-origins", "https://a.example,https://b.example"])
    assert args.allowed_origins == ["https://a.example", "https://b.example"]


def test_environment_gives_the_defaults(monkeypatch):
    env = {
        "DLLM_MODEL": "/m",
        "DLLM_HOST": "0.0.0.0",
        "DLLM_PORT": "9000",
        "DLLM_API_KEY": "k",
        "DLLM_SERVED_MODEL_NAME": "name",
        "DLLM_MAX_NUM_SEQS": "7",
        "DLLM_MAX_WAITING": "9",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args([])
    assert (
        args.model,
        args.host,
        args.port,
        args.api_key,
        args.served_model_name,
        args.max_num_seqs,
        args.max_waiting,
    ) == ("/m", "0.0.0.0", 9000, "k", "name", 7, 9)
    assert parser.parse_args(["--port", "1234"]).port == 1234  # flags win


def test_defaults_without_environment(monkeypatch):
    for key in cli.ENV_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args([])
    assert (args.host, args.port, args.api_key, args.max_num_seqs) == ("127.0.0.1", 8000, None, 32)


def test_cache_flags_reach_the_engine_config():
    """`dllm serve --cache X` is the default of requests that set none; --kv-cache-memory sizes the pool."""
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--cache", "dual", "--kv-cache-memory", "0.5"])
    config = EngineConfig(**engine_kwargs(args))
    assert (config.cache, config.kv_cache_memory) == ("dual", 0.5)
    unset = EngineConfig(**engine_kwargs(parser.parse_args([])))
    assert (unset.cache, unset.kv_cache_memory) == (None, None)


def test_every_sampling_field_is_a_request_field():
    """New engine options must be exposed (or deliberately excluded here) as the engine gains them."""
    names = {f.name for f in fields(SamplingParams)}
    assert names <= set(CompletionRequest.model_fields)
    assert names <= set(ChatCompletionRequest.model_fields)
