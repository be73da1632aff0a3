"""SMDM as a user runs it: a bare .safetensors file and a tokenizer directory given to `dllm generate`
and to a real `dllm serve` process called with the openai client."""

import os
import shutil
import subprocess
import sys

import httpx
import openai
import pytest
from http_helpers import API_KEY, REPO, ServerProcess, assert_error

from models.writers.smdm import tokenizer_dir, write_tiny_checkpoint


@pytest.fixture(scope="module")
def smdm_file(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("smdm"))


def dllm(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=REPO,
    )


def test_generate_from_the_file_and_a_tokenizer_dir(smdm_file):
    res = dllm(
        "generate",
        "--model",
        str(smdm_file),
        "--tokenizer",
        str(tokenizer_dir(smdm_file)),
        "--max-tokens",
        "6",
        "--cfg-scale",
        "0.5",
        "--quiet",
        "The sky is",
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip()  # random weights: filler tokens such as ~123~


def test_file_name_without_size_is_one_line(smdm_file, tmp_path):
    renamed = tmp_path / "weights.safetensors"
    shutil.copy(smdm_file, renamed)
    res = dllm("generate", "--model", str(renamed), "--tokenizer", str(tokenizer_dir(smdm_file)), "hi")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith(
        f"dllm generate: error: {renamed}: cannot tell the SMDM size from the file name"
    )
    assert "pass --smdm-size Diff_LLaMA_<N>M (its shapes fit Diff_LLaMA_6M)" in res.stderr


@pytest.fixture(scope="module")
def server(smdm_file, tmp_path_factory):
    """A renamed file, so the size comes from --smdm-size; no chat template in the tokenizer."""
    folder = tmp_path_factory.mktemp("renamed")
    renamed = folder / "smdm-6m.safetensors"
    shutil.copy(smdm_file, renamed)
    flags = ("--tokenizer", str(tokenizer_dir(smdm_file)), "--smdm-size", "Diff_LLaMA_6M")
    proc = ServerProcess(renamed, folder / "server.log", *flags, "--max-num-seqs", "4")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.v1, api_key=API_KEY, max_retries=0, timeout=120)


def test_completions_with_smdm_sampling(client, smdm_file):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir(smdm_file)))
    [model] = [m.id for m in client.models.list().data]
    assert model == "smdm-6m.safetensors"
    greedy, guided, origin = (
        {"steps": 8},
        {"steps": 8, "cfg_scale": 0.6},
        {"sampler": "continuous", "steps": 32},
    )
    for extra in (greedy, guided, origin):
        resp = client.completions.create(
            model=model, prompt="The sky is", max_tokens=8, temperature=0, seed=1, extra_body=extra
        )
        [choice] = resp.choices
        assert isinstance(choice.text, str) and choice.finish_reason in ("stop", "length")
        assert resp.usage.prompt_tokens == len(tok("The sky is", add_special_tokens=False)["input_ids"])
        assert resp.usage.completion_tokens <= 8


def test_chat_without_a_template_is_refused(server):
    body = {"model": "smdm-6m.safetensors", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    resp = httpx.post(server.v1 + "/chat/completions", json=body, headers=server.headers, timeout=60)
    err = assert_error(resp, 400, param="messages")
    assert "no chat template" in err["message"]
