"""GPU tier: the engine on CUDA with Triton kernels against the torch path (skipped without CUDA)."""

import pytest
import torch

from engine import LLM, SamplingParams
from kernels.ops import TorchOps, TritonOps
from models import load_model
from models.llada import PackedBatch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

PROMPTS = [[7, 8, 9, 10, 11], [40, 41], [100, 3, 200, 12, 13, 14, 15, 16, 17]]


def test_fp32_tokens_equal_between_triton_and_torch(tiny_ckpt):
    params = SamplingParams(
        max_tokens=16, steps=16, block_length=8, temperature=0.0, cfg_scale=1.0, ignore_eos=True
    )
    outs = {}
    for kernels in ("torch", "triton"):
        llm = LLM(tiny_ckpt, device="cuda", dtype="float32", kernels=kernels)
        outs[kernels] = [o.token_ids for o in llm.generate(prompt_token_ids=PROMPTS, sampling_params=params)]
    assert outs["triton"] == outs["torch"]


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_fp32_cached_tokens_equal_between_triton_and_torch(tiny_ckpt, cache):
    params = SamplingParams(
        max_tokens=24, steps=24, block_length=8, temperature=0.0, cfg_scale=1.0, cache=cache, ignore_eos=True
    )
    outs = {}
    for kernels in ("torch", "triton"):
        llm = LLM(tiny_ckpt, device="cuda", dtype="float32", kernels=kernels, kv_cache_memory=0.1)
        outs[kernels] = [o.token_ids for o in llm.generate(prompt_token_ids=PROMPTS, sampling_params=params)]
        assert llm.engine.kv_cache.allocator.num_used == 0
    assert outs["triton"] == outs["torch"]


def test_bf16_forward_close_between_triton_and_torch(tiny_ckpt):
    lm = load_model(tiny_ckpt, dtype="bfloat16", device="cuda")
    batch = PackedBatch.from_sequences([torch.tensor(p) for p in PROMPTS], "cuda")
    ref = lm.model(batch, TorchOps()).float()
    got = lm.model(batch, TritonOps()).float()
    torch.testing.assert_close(got, ref, rtol=3e-2, atol=3e-2)


def test_triton_sampling_head_is_seeded_on_gpu(tiny_ckpt):
    llm = LLM(tiny_ckpt, device="cuda", dtype="bfloat16", kernels="triton")
    params = SamplingParams(max_tokens=16, block_length=8, temperature=0.9, seed=5, ignore_eos=True)
    a = llm.generate(prompt_token_ids=PROMPTS, sampling_params=params)
    b = llm.generate(prompt_token_ids=PROMPTS[:1], sampling_params=params)
    assert a[0].token_ids == b[0].token_ids
