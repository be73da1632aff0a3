"""LLaDA-MoE generation through the engine (LLM) and the CLI, from tiny release-layout checkpoints."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lladamoe_reference import FEATURED, read_checkpoint, reference_generate

from engine import LLM, SamplingParams
from models.tokenizer import render_chat
from models.writers.llada_moe import write_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = [[7, 8, 9, 10, 11], [40, 41], [100, 3, 200, 12, 13, 14, 15, 16, 17]]
CHAT = [{"role": "user", "content": "reverse abcde"}]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """The dInfer-fused layout with every option on (the unfused one loads to the same weights)."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("lladamoe_gen"), fused=True, overrides=FEATURED)


@pytest.fixture(scope="module")
def llm(ckpt):
    return LLM(str(ckpt), device="cpu", dtype="float32", kernels="torch", kv_cache_memory=0.01)


@pytest.mark.parametrize(
    "steps, gen_length, block_length, cfg_scale",
    [(8, 8, 8, 0.0), (4, 8, 4, 0.0), (4, 4, 4, 1.5)],
)
def test_exact_mode_matches_the_reference_sampler(llm, ckpt, steps, gen_length, block_length, cfg_scale):
    """Greedy tokens = LLaDA's sampler over the plain published forward, with the mask id the
    engine took from the tokenizer."""
    cfg, sd = read_checkpoint(ckpt)
    mask_id = llm.engine.spec.mask_token_id
    assert mask_id == llm.tokenizer.mask_token_id
    params = SamplingParams(
        max_tokens=gen_length,
        steps=steps,
        block_length=block_length,
        temperature=0.0,
        cfg_scale=cfg_scale,
        ignore_eos=True,
    )
    outs = llm.generate(prompt_token_ids=PROMPTS, sampling_params=params)
    for prompt, out in zip(PROMPTS, outs, strict=True):
        expected = reference_generate(cfg, sd, mask_id, prompt, steps, gen_length, block_length, cfg_scale)
        assert out.token_ids == expected


def test_chat_uses_the_dinfer_format(llm):
    ids = render_chat(llm.tokenizer, CHAT)
    assert llm.tokenizer.decode(ids) == (
        "<role>SYSTEM</role>detailed thinking off<|role_end|><role>HUMAN</role>reverse abcde"
        "<|role_end|><role>ASSISTANT</role>"
    )
    [out] = llm.chat(CHAT, SamplingParams(max_tokens=8, block_length=4, temperature=0.0))
    assert out.prompt_token_ids == ids and out.finished and isinstance(out.text, str)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("cfg_scale", [0.0, 1.0])
def test_approximate_caches_and_guidance_run(llm, cache, cfg_scale):
    """The K/V caches take the family's geometry (2 kv heads of 16, 3 layers); with guidance too."""
    params = SamplingParams(
        max_tokens=8,
        steps=8,
        block_length=4,
        temperature=0.0,
        cache=cache,
        cfg_scale=cfg_scale,
        ignore_eos=True,
    )
    outs = llm.generate(prompt_token_ids=PROMPTS, sampling_params=params)
    vocab, mask = llm.engine.spec.vocab_size, llm.engine.spec.mask_token_id
    for out in outs:
        assert len(out.token_ids) == 8 and all(0 <= t < vocab and t != mask for t in out.token_ids)
    assert llm.engine.kv_cache.allocator.num_used == 0  # every page back


def dllm(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )


def test_cli_generate_chat_answers_like_the_engine(llm, ckpt):
    flags = ["--max-tokens", "8", "--block-length", "4", "--temperature", "0"]
    res = dllm("generate", "--model", str(ckpt), "--chat", "--quiet", *flags, "reverse abcde")
    assert res.returncode == 0, res.stderr
    [out] = llm.chat(CHAT, SamplingParams(max_tokens=8, block_length=4, temperature=0.0))
    assert res.stdout.strip() == out.text.strip()


def test_cli_broken_checkpoint_is_one_line(ckpt, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in ckpt.iterdir():
        (broken / f.name).symlink_to(f)
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    del index["weight_map"]["model.layers.2.mlp.w2"]
    (broken / "model.safetensors.index.json").unlink()
    (broken / "model.safetensors.index.json").write_text(json.dumps(index))
    res = dllm("generate", "--model", str(broken), "hello")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == (
        f"dllm generate: error: {broken}/model.safetensors.index.json: missing key 'model.layers.2.mlp.w2'"
    )
