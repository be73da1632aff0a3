"""SamplingParams validation, the temperature sampler's distribution, and the unmasking policies."""

from types import SimpleNamespace

import pytest
import torch

from engine.sampler import gumbel_argmax
from engine.sampling_params import SamplingParams
from engine.unmasking import FactorPolicy, SchedulePolicy, ThresholdPolicy


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_tokens": 0}, "max_tokens must be at least 1"),
        ({"max_tokens": 2.5}, "max_tokens must be an integer"),
        ({"steps": True}, "steps must be an integer"),
        ({"temperature": -0.1}, "temperature must be at least 0"),
        ({"temperature": float("nan")}, "temperature must be a finite number"),
        ({"remasking": "lowest"}, "remasking must be one of low_confidence, random"),
        ({"cfg_scale": -1}, "cfg_scale must be at least 0"),
        ({"threshold": 1.5}, r"threshold must be in \(0, 1\]"),
        ({"sampler": "fast"}, "sampler must be one of exact, continuous"),
        ({"seed": "7"}, "seed must be an integer"),
        ({"stop": ["", "x"]}, "stop must be a string or a list of non-empty strings"),
    ],
)
def test_invalid_values_are_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_cross_field_checks_after_resolution():
    with pytest.raises(
        ValueError,
        match=r"steps \(2\) must be at least the number of blocks \(3 = "
        r"ceil\(max_tokens 10 / block_length 4\)\)",
    ):
        SamplingParams(max_tokens=10, block_length=4, steps=2).resolve()
    with pytest.raises(ValueError, match="set at most one"):
        SamplingParams(threshold=0.9, factor=1.0).resolve()


def test_defaults_come_from_the_checkpoint_then_builtins():
    gen_config = {"max_tokens": 24, "block_length": 8, "steps": 12, "temperature": 0.5}
    p = SamplingParams(temperature=0.0).resolve(gen_config)
    assert (p.max_tokens, p.block_length, p.steps, p.temperature) == (24, 8, 12, 0.0)
    q = SamplingParams().resolve({})
    assert (q.max_tokens, q.steps, q.block_length, q.mode) == (128, 128, 128, "schedule")
    assert SamplingParams(max_tokens=5, block_length=32).resolve().block_length == 5
    assert SamplingParams(stop="x").stop == ["x"]


def test_gumbel_sampler_matches_softmax_distribution():
    """Chi-square goodness of fit of 20k draws against the exact float64 softmax(l / T)."""
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, float("-inf"), 0.0, 3.0]])
    temperature, draws = 0.7, 20000
    gen = torch.Generator().manual_seed(0)
    samples = torch.cat(
        [gumbel_argmax(logits.expand(1000, -1), temperature, gen) for _ in range(draws // 1000)]
    )
    counts = torch.bincount(samples, minlength=logits.shape[1]).double()
    probs = torch.softmax(logits[0].double() / temperature, dim=-1)
    assert counts[4] == 0  # a banned (-inf) token is never drawn
    keep = probs > 0
    expected = probs[keep] * draws
    chi2 = float(((counts[keep] - expected) ** 2 / expected).sum())
    # 5 degrees of freedom: P(chi2 > 20.5) ~ 0.001
    assert chi2 < 20.5, chi2


def test_gumbel_sampler_chunks_do_not_change_the_result(monkeypatch):
    logits = torch.randn(4, 50000, generator=torch.Generator().manual_seed(3))
    a = gumbel_argmax(logits, 1.0, torch.Generator().manual_seed(5))
    b = gumbel_argmax(logits, 1.0, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    # Low temperature concentrates on the argmax.
    c = gumbel_argmax(logits, 1e-4, torch.Generator().manual_seed(5))
    assert torch.equal(c, logits.argmax(-1))


def _req(**params):
    return SimpleNamespace(params=SimpleNamespace(**params), num_to_commit=lambda: 2)


def test_policies():
    conf = torch.tensor([0.2, 0.95, 0.5, 0.91, 0.1])
    assert sorted(SchedulePolicy().select(conf, _req()).tolist()) == [1, 3]
    assert sorted(ThresholdPolicy().select(conf, _req(threshold=0.9)).tolist()) == [1, 3]
    assert ThresholdPolicy().select(conf, _req(threshold=0.99)).tolist() == [1]  # always the best
    # factor f=1: c1 >= 0.5, c2 >= 1 - 1/3, c3 >= 0.75 ...
    assert FactorPolicy().select(conf, _req(factor=1.0)).tolist() == [1, 3]
    assert FactorPolicy().select(torch.tensor([0.3, 0.2]), _req(factor=1.0)).tolist() == [0]
