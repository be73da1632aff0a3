"""The dllm CLI from a fresh process, as a user runs it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.cli import (
    ArgumentParser,
    add_engine_arguments,
    apply_threads,
    default_threads,
    main,
    package_version,
    physical_cores,
)

ROOT = Path(__file__).resolve().parents[1]


def dllm(*args, timeout=120, drop_env=()):
    env = {k: v for k, v in os.environ.items() if k not in drop_env}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def test_generate_prints_text_and_shows_progress(tiny_ckpt):
    res = dllm(
        "generate",
        "--model",
        str(tiny_ckpt),
        "--max-tokens",
        "8",
        "--block-length",
        "4",
        "--temperature",
        "0",
        "The sky is",
    )
    assert res.returncode == 0, res.stderr
    assert "denoising" in res.stderr and "8/8" in res.stderr  # the progress bar over steps
    assert res.stdout.strip()  # a random model says something, not nothing


def test_generate_chat_several_prompts(tiny_ckpt):
    res = dllm("generate", "--model", str(tiny_ckpt), "--chat", "--quiet", "--max-tokens", "4", "hi", "yo")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("forward passes]") == 2


def test_missing_model_directory_is_one_clear_line(tmp_path):
    res = dllm("generate", "--model", str(tmp_path / "nope"), "hello")
    assert res.returncode == 2
    assert res.stderr.strip() == f"dllm generate: error: {tmp_path / 'nope'}: model directory not found"


def test_kernels_that_cannot_run_are_one_line(tiny_ckpt):
    """--kernels triton on a host without CUDA fails at the warm-up step, before any prompt runs."""
    if torch.cuda.is_available():
        pytest.skip("needs a host without CUDA")
    # Without TRITON_INTERPRET (tests/conftest.py sets it on CPU hosts): the real host's behaviour.
    res = dllm(
        "generate",
        "--model",
        str(tiny_ckpt),
        "--kernels",
        "triton",
        "--quiet",
        "hi",
        drop_env=("TRITON_INTERPRET",),
    )
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("dllm generate: error: ") and "triton" in res.stderr, res.stderr


def test_broken_model_directory_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text("{broken")
    res = dllm("generate", "--model", str(tmp_path), "hello")
    assert res.returncode == 2 and "config.json: not valid JSON" in res.stderr
    assert "Traceback" not in res.stderr


def test_bad_sampling_flag_is_explained(tiny_ckpt):
    res = dllm(
        "generate",
        "--model",
        str(tiny_ckpt),
        "--max-tokens",
        "8",
        "--block-length",
        "2",
        "--steps",
        "3",
        "hello",
    )
    assert res.returncode == 2
    assert "steps (3) must be at least the number of blocks (4" in res.stderr


def test_generate_with_a_cache():
    res = dllm("generate", "--chat", "--quiet", "--cache", "dual", "--block-length", "8", "reverse abcde")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "edcba"


def test_generate_with_dream_remasking():
    """--remasking takes Dream's entropy and margin rules: the demo model still answers."""
    for remasking in ("entropy", "margin"):
        res = dllm(
            "generate", "--chat", "--quiet", "--remasking", remasking, "--block-length", "8", "reverse abcde"
        )
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == "edcba"


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            ["generate", "--cache", "bogus", "hi"],
            "dllm generate: error: argument --cache: invalid choice: 'bogus'",
        ),
        (
            ["eval", "--kv-cache-memory", "-1"],
            "dllm eval: error: argument --kv-cache-memory: expected a number",
        ),
        (
            ["serve", "--cache", "prefix", "--kv-cache-memory", "0"],
            "dllm serve: error: --cache prefix needs a K/V cache pool: --kv-cache-memory must be > 0",
        ),
        (
            ["generate", "--cuda-graphs", "sometimes", "hi"],
            "dllm generate: error: argument --cuda-graphs: invalid choice: 'sometimes'",
        ),
        (
            ["generate", "--device", "cpu", "--cuda-graphs", "on", "hi"],
            "dllm generate: error: cuda_graphs 'on' needs a CUDA device; the engine runs on cpu",
        ),
    ],
)
def test_bad_cache_flag_is_one_line(argv, message, capsys):
    """Before any model loads: one line on stderr, exit status 2."""
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2 and err.startswith(message) and err.count("\n") == 1, err


def test_version():
    res = dllm("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"dllm {package_version()}", res.stderr
    assert package_version() != "unknown"  # the project is installed (editable) in its venv


@pytest.mark.parametrize(
    "flag,environ,expected",
    [(["--threads", "3"], {}, 3), ([], {}, "default"), ([], {"OMP_NUM_THREADS": "2"}, None)],
)
def test_threads(flag, environ, expected, monkeypatch):
    """--threads wins; unset, OMP_NUM_THREADS is left to torch; else default_threads()."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    before = torch.get_num_threads()
    parser = ArgumentParser(prog="dllm generate")
    add_engine_arguments(parser)
    try:
        in_force = apply_threads(parser.parse_args(flag))
        want = {"default": default_threads(), None: before}.get(expected, expected)
        assert in_force == torch.get_num_threads() == want
    finally:
        torch.set_num_threads(before)


def test_default_threads_leave_a_core():
    assert default_threads() == max(1, physical_cores() - 1)
    assert 1 <= physical_cores() <= (os.cpu_count() or 1)


def test_generate_and_eval_take_threads(tiny_ckpt):
    res = dllm("generate", "--model", str(tiny_ckpt), "--quiet", "--max-tokens", "4", "--threads", "1", "hi")
    assert res.returncode == 0, res.stderr
    res = dllm("eval", "--threads", "0")
    assert res.returncode == 2 and "argument --threads: expected an integer >= 1" in res.stderr
