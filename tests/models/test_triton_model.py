"""The LLaDA forward and generation with Triton kernels (interpreted on CPU) against the torch path."""

import pytest
import torch

from engine import LLM, SamplingParams
from kernels.ops import TorchOps, TritonOps, get_ops
from models import load_model
from models.llada import PackedBatch

pytestmark = pytest.mark.interpreter


def test_get_ops_auto_picks_torch_on_cpu():
    assert get_ops("auto", torch.device("cpu")).name == "torch"
    assert get_ops("triton", torch.device("cpu")).name == "triton"
    with pytest.raises(ValueError):
        get_ops("cuda-graphs", torch.device("cpu"))


def test_forward_with_triton_kernels_matches_torch(tiny_ckpt):
    lm = load_model(tiny_ckpt, dtype="float32", device="cpu")
    seqs = [torch.arange(3, 14), torch.arange(40, 45), torch.arange(60, 67)]
    batch = PackedBatch.from_sequences(seqs, "cpu")
    index = torch.tensor([0, 5, 10, 11, 15, 16, 22])
    expected = lm.model(batch, TorchOps(), index)
    got = lm.model(batch, TritonOps(), index)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cache, cfg_scale", [("none", 0.0), ("prefix", 1.0), ("dual", 0.0)])
def test_generation_with_triton_kernels_matches_torch(tiny_ckpt, cache, cfg_scale):
    """Greedy tokens with every Triton kernel (paged attention for the caches, the sampling head over
    the whole step's rows) equal the torch path's."""
    params = SamplingParams(
        max_tokens=8,
        steps=8,
        block_length=4,
        temperature=0.0,
        cache=cache,
        cfg_scale=cfg_scale,
        ignore_eos=True,
    )
    prompts = [[7, 8, 9, 10], [40, 41, 42]]
    ref = LLM(tiny_ckpt, device="cpu", dtype="float32", kernels="torch").generate(
        prompt_token_ids=prompts, sampling_params=params
    )
    tri = LLM(tiny_ckpt, device="cpu", dtype="float32", kernels="triton").generate(
        prompt_token_ids=prompts, sampling_params=params
    )
    assert [o.token_ids for o in tri] == [o.token_ids for o in ref]
