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


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_graphs_give_the_tokens_of_eager_steps(tiny_ckpt, dtype):
    """Dual-cache block steps replayed from CUDA graphs (padded rows, CFG, seeded sampling) against
    the same engine with graphs off."""
    params = [
        SamplingParams(max_tokens=24, steps=24, block_length=8, cache="dual", ignore_eos=True),
        SamplingParams(max_tokens=16, steps=8, block_length=8, cache="dual", cfg_scale=1.0, ignore_eos=True),
        SamplingParams(
            max_tokens=16,
            block_length=8,
            cache="dual",
            temperature=0.8,
            seed=3,
            threshold=0.5,
            ignore_eos=True,
        ),
    ]
    outs = {}
    for mode in ("off", "on"):
        llm = LLM(
            tiny_ckpt, device="cuda", dtype=dtype, kernels="triton", kv_cache_memory=0.1, cuda_graphs=mode
        )
        outs[mode] = [o.token_ids for o in llm.generate(prompt_token_ids=PROMPTS, sampling_params=params)]
        assert llm.engine.kv_cache.allocator.num_used == 0
    graphs = llm.engine.runner.graphs
    assert graphs.num_captured > 0 and graphs.num_replays > 0
    if dtype == "float32":
        assert outs["on"] == outs["off"]
    else:  # padded rows change cuBLAS's shapes, and bf16 sums can round apart: nearly all the same
        pairs = [
            (a, b)
            for on, off in zip(outs["on"], outs["off"], strict=True)
            for a, b in zip(on, off, strict=True)
        ]
        assert sum(a == b for a, b in pairs) >= 0.9 * len(pairs)


def test_a_capture_that_fails_on_cuda_falls_back_to_eager(tiny_ckpt, caplog):
    """The torch references read lengths on the host, which a capture cannot hold: forced on, each
    shape logs one warning and runs eagerly."""
    import logging

    params = [SamplingParams(max_tokens=16, steps=16, block_length=8, cache="dual", ignore_eos=True)] * 2
    plain = LLM(tiny_ckpt, device="cuda", dtype="float32", kernels="torch", kv_cache_memory=0.1)
    forced = LLM(tiny_ckpt, device="cuda", dtype="float32", kernels="torch", kv_cache_memory=0.1)
    forced.engine.runner.use_cuda_graphs(max_rows=4)
    with caplog.at_level(logging.WARNING, logger="dllm.engine"):
        got = forced.generate(prompt_token_ids=PROMPTS[:2], sampling_params=params)
    want = plain.generate(prompt_token_ids=PROMPTS[:2], sampling_params=params)
    assert [o.token_ids for o in got] == [o.token_ids for o in want]
    assert any("runs eagerly" in r.getMessage() for r in caplog.records)


def test_host_buffer_brings_back_each_step_its_own_values():
    """The step's transfer through the kept pinned buffer: values and shapes of successive fetches,
    the buffer growing past its first size."""
    from engine.transfer import HostBuffer

    host = HostBuffer()
    for n in (3, 2000, 5):
        values = torch.arange(n, device="cuda").view(1, n) * 7
        got = host.fetch(values)
        assert got.device.type == "cpu" and got.shape == (1, n)
        assert got.tolist() == [[7 * i for i in range(n)]]
