"""SamplingParams validation, the temperature sampler's distribution, and the unmasking policies."""

import math

import pytest
import torch

from engine.sampler import RowParams, distribution_confidence, sample_candidates
from engine.sampling_params import SamplingParams
from engine.unmasking import MODES, FactorPolicy, PolicyStep, SchedulePolicy, ThresholdPolicy, choose
from kernels import sampling_head
from kernels.ops import TorchOps
from kernels.sampling_head import sample_head_ref


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_tokens": 0}, "max_tokens must be at least 1"),
        ({"max_tokens": 2.5}, "max_tokens must be an integer"),
        ({"steps": True}, "steps must be an integer"),
        ({"temperature": -0.1}, "temperature must be at least 0"),
        ({"temperature": float("nan")}, "temperature must be a finite number"),
        ({"remasking": "lowest"}, "remasking must be one of low_confidence, random, entropy, margin"),
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


def test_a_chosen_decoding_mode_does_not_inherit_a_conflicting_default():
    """A family whose default is the continuous sampler (RADD) still takes threshold requests, and a
    checkpoint defaulting to threshold decoding still takes continuous-sampler requests."""
    radd = {"sampler": "continuous"}
    assert SamplingParams().resolve(radd).sampler == "continuous"
    p = SamplingParams(threshold=0.9).resolve(radd)
    assert (p.sampler, p.threshold) == ("exact", 0.9)
    with pytest.raises(ValueError, match="continuous sampler does not combine"):
        SamplingParams(threshold=0.9, sampler="continuous").resolve(radd)
    q = SamplingParams(sampler="continuous").resolve({"threshold": 0.8})
    assert (q.sampler, q.threshold, q.factor) == ("continuous", None, None)
    assert SamplingParams().resolve({"threshold": 0.8}).threshold == 0.8


def test_checkpoint_steps_scale_with_max_tokens():
    """generation_config's steps go with its max_tokens: a longer answer keeps the tokens per step."""
    gen_config = {"max_tokens": 24, "block_length": 8, "steps": 12}  # two tokens per step
    assert SamplingParams(max_tokens=256).resolve(gen_config).steps == 128
    assert SamplingParams(max_tokens=7).resolve(gen_config).steps == 4  # ceil(3.5)
    assert SamplingParams(max_tokens=256, steps=32).resolve(gen_config).steps == 32  # asked for
    # never fewer steps than blocks: blocks of 1 need one step each
    assert SamplingParams(max_tokens=10, block_length=1).resolve(gen_config).steps == 10
    assert SamplingParams(max_tokens=256).resolve({"max_tokens": 24}).steps == 256  # no steps given


def test_gumbel_sampler_matches_softmax_distribution():
    """Chi-square goodness of fit of 20k draws (one seed each) against the exact float64 softmax(l / T)."""
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, float("-inf"), 0.0, 3.0]])
    temperature, draws = 0.7, 20000
    samples, _ = sample_head_ref(
        logits.expand(draws, -1), torch.full((draws,), temperature), torch.arange(draws) * 7919 + 3
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
    temps, seeds = torch.ones(4), torch.tensor([5, 6, 7, 8])
    a, _ = sample_head_ref(logits, temps, seeds)
    monkeypatch.setattr(sampling_head, "GUMBEL_CHUNK", 1 << 20)
    assert torch.equal(sample_head_ref(logits, temps, seeds)[0], a)
    assert not torch.equal(sample_head_ref(logits, temps, seeds + 1)[0], a)
    # Low temperature concentrates on the argmax; temperature 0 is the argmax.
    assert torch.equal(sample_head_ref(logits, torch.full((4,), 1e-4), seeds)[0], logits.argmax(-1))
    assert torch.equal(sample_head_ref(logits, torch.zeros(4), seeds)[0], logits.argmax(-1))


def _step(conf_rows, **per_row):
    """A PolicyStep from ragged confidence rows (padded with -inf) and per-row settings."""
    width = max(len(r) for r in conf_rows)
    conf = torch.full((len(conf_rows), width), float("-inf"))
    for i, r in enumerate(conf_rows):
        conf[i, : len(r)] = torch.tensor(r)
    b = len(conf_rows)
    k = torch.tensor(per_row.get("k", [2] * b))
    return PolicyStep(
        confidence=conf,
        valid=conf > float("-inf"),
        mode=torch.tensor([MODES.index(m) for m in per_row.get("modes", ["schedule"] * b)]),
        num_commit=k,
        max_commit=int(k.max()),
        threshold=torch.tensor(per_row.get("threshold", [0.9] * b)),
        factor=torch.tensor(per_row.get("factor", [1.0] * b)),
        reveal=torch.tensor(per_row["reveal"]) if "reveal" in per_row else conf > 2,
    )


def _picked(chosen):
    return [row.nonzero().flatten().tolist() for row in chosen]


def test_policies():
    conf = [0.2, 0.95, 0.5, 0.91, 0.1]
    assert _picked(SchedulePolicy().select(_step([conf]))) == [[1, 3]]
    assert _picked(ThresholdPolicy().select(_step([conf], threshold=[0.9]))) == [[1, 3]]
    assert _picked(ThresholdPolicy().select(_step([conf], threshold=[0.99]))) == [[1]]  # always the best
    # factor f=1: c1 >= 0.5, c2 >= 1 - 1/3, c3 >= 0.75 ...
    assert _picked(FactorPolicy().select(_step([conf], factor=[1.0]))) == [[1, 3]]
    assert _picked(FactorPolicy().select(_step([[0.3, 0.2]], factor=[1.0]))) == [[0]]


def test_each_row_takes_its_own_policy_and_settings():
    rows = [[0.2, 0.95, 0.5, 0.91, 0.1], [0.6, 0.7], [0.3, 0.99, 0.98], [0.5, 0.5, 0.5], [0.1]]
    step = _step(
        rows,
        modes=["schedule", "schedule", "threshold", "continuous", "factor"],
        k=[3, 1, 0, 0, 0],
        threshold=[0.0, 0.0, 0.985, 0.0, 0.0],
        reveal=[[False] * 5, [False] * 5, [False] * 5, [True, False, True, True, True], [False] * 5],
    )
    chosen = choose(step, {"schedule", "threshold", "continuous", "factor"})
    # Padding (past each row's own length) is never chosen, even where a reveal was drawn.
    assert _picked(chosen) == [[1, 2, 3], [1], [1], [0, 2], [0]]


def _dream_confidences(row: torch.Tensor) -> tuple[float, float]:
    """One position's (negative entropy, top1 - top2 margin) of p = softmax(row), in float64."""
    p = torch.softmax(row.double(), dim=0).tolist()
    neg_entropy = sum(q * math.log(q) for q in p if q > 0)
    best, second = sorted(p, reverse=True)[:2]
    return neg_entropy, best - second


def test_dream_confidences_restate_entropy_and_margin():
    gen = torch.Generator().manual_seed(11)
    logits = torch.randn(9, 300, generator=gen) * 3
    logits[2, :50] = float("-inf")  # banned columns: probability 0, nothing in the entropy
    logits[5] = 0.0  # uniform: entropy log V, margin 0
    neg_entropy = distribution_confidence(logits, "entropy")
    margin = distribution_confidence(logits, "margin")
    assert neg_entropy.dtype == margin.dtype == torch.float32
    for i in range(logits.shape[0]):
        want_entropy, want_margin = _dream_confidences(logits[i])
        assert neg_entropy[i].item() == pytest.approx(want_entropy, abs=1e-4)
        assert margin[i].item() == pytest.approx(want_margin, abs=1e-6)
    assert neg_entropy[5].item() == pytest.approx(-math.log(300), abs=1e-4)


def test_each_row_takes_its_own_confidence():
    """Rows of low_confidence, entropy and margin requests in one call: each gets its own measure;
    candidates are the same whatever the measure, and EOS/EoT bans still push candidates to -inf."""
    gen = torch.Generator().manual_seed(12)
    logits = torch.randn(7, 40, generator=gen) * 2
    rows = RowParams(keys=torch.arange(7), temperature=torch.zeros(7))
    plain_tokens, plain = sample_candidates(logits, rows, torch.tensor([39]), TorchOps())
    rows.measured = {"entropy": torch.tensor([1, 2]), "margin": torch.tensor([4, 6])}
    rows.ban_stop_confidence = torch.tensor([False] * 6 + [True])
    stop = int(logits[6].argmax())  # row 6's candidate is a stop token: banned
    tokens, confidence = sample_candidates(logits, rows, torch.tensor([stop]), TorchOps())
    assert torch.equal(tokens, plain_tokens)
    for i in (0, 3, 5):
        assert confidence[i] == plain[i]
    for i in (1, 2):
        assert confidence[i].item() == pytest.approx(_dream_confidences(logits[i])[0], abs=1e-4)
    assert confidence[4].item() == pytest.approx(_dream_confidences(logits[4])[1], abs=1e-6)
    assert confidence[6] == float("-inf")
