"""`dllm generate` on a tiny RADD checkpoint from a fresh process: the tokenizer from --tokenizer,
RADD's continuous sampler; chat and a missing tokenizer are one clear line each."""

import pytest
from test_cli import dllm  # `python -m engine.cli ...` in a fresh process

from models.writers.radd import tokenizer_dir, write_tiny_checkpoint


@pytest.fixture(scope="module")
def radd_dir(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("radd_cli"))


def test_generate_with_continuous_sampler(radd_dir):
    res = dllm(
        "generate",
        "--model",
        str(radd_dir),
        "--tokenizer",
        str(tokenizer_dir(radd_dir)),
        "--sampler",
        "continuous",
        "--steps",
        "128",
        "--max-tokens",
        "16",
        "--temperature",
        "1",
        "--seed",
        "2",
        "--quiet",
        "The sky is",
        "Once upon a time",
    )
    assert res.returncode == 0, res.stderr
    # Two prompts: one header each with its forward count, far fewer than the 128 steps.
    headers = [line for line in res.stdout.splitlines() if line.startswith("--- [")]
    assert len(headers) == 2
    assert all(int(h.split(", ")[1].split()[0]) <= 16 for h in headers), headers


def test_chat_is_one_clear_line(radd_dir):
    res = dllm(
        "generate", "--model", str(radd_dir), "--tokenizer", str(tokenizer_dir(radd_dir)), "--chat", "hi"
    )
    assert res.returncode == 2
    assert res.stderr.strip() == (
        "dllm generate: error: this model's tokenizer has no chat template; send a plain prompt instead"
    )


def test_text_prompt_without_tokenizer_is_one_clear_line(radd_dir):
    res = dllm("generate", "--model", str(radd_dir), "--quiet", "hello")
    assert res.returncode == 2
    assert res.stderr.strip().startswith("dllm generate: error: this checkpoint has no tokenizer")
    assert len(res.stderr.strip().splitlines()) == 1
