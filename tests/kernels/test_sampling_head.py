"""Sampling head launcher against `sample_head_ref`: exact at temperature 0, same law at T > 0."""

import math

import pytest
import torch

from kernels.sampling_head import (
    choose_head_splits,
    max_probability,
    max_probability_ref,
    sample_head,
    sample_head_ref,
)

pytestmark = [
    pytest.mark.interpreter,
    pytest.mark.filterwarnings("ignore:Conversion of an array with ndim:DeprecationWarning"),
]

NEG_INF = float("-inf")


def chi_square_critical(dof: int, z: float = 3.72) -> float:
    """Wilson-Hilferty upper quantile of chi-square(dof); z = 3.72 is a one-sided p of 1e-4."""
    h = 2.0 / (9.0 * dof)
    return dof * (1.0 - h + z * math.sqrt(h)) ** 3


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """Pearson statistic over categories with expected count >= 5 plus one pooled rest category."""
    n = float(counts.sum())
    expected = probs.double() * n
    big = expected >= 5
    obs = torch.cat([counts[big].double(), counts[~big].double().sum().reshape(1)])
    exp = torch.cat([expected[big], expected[~big].sum().reshape(1)])
    keep = exp > 0
    stat = float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum())
    return stat, int(keep.sum()) - 1


def _softmax64(row: torch.Tensor) -> torch.Tensor:
    return torch.softmax(row.double(), dim=-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("vocab", [37, 1000, 1537])
def test_greedy_matches_reference(device, dtype, vocab):
    num_rows = 5
    logits = (torch.randn(num_rows, vocab, device=device) * 4).to(dtype)
    logits[0, ::3] = NEG_INF  # banned tokens
    logits[1, -1] = 50.0  # the winner in the last, partial chunk
    temperature = torch.zeros(num_rows, device=device)
    seeds = torch.arange(num_rows, device=device)
    tokens, probs = sample_head(logits, temperature, seeds)
    ref_tokens, ref_probs = sample_head_ref(logits, temperature, seeds)
    assert tokens.tolist() == ref_tokens.tolist()
    assert int(tokens[1]) == vocab - 1
    torch.testing.assert_close(probs, ref_probs, rtol=2e-6, atol=1e-7)


def test_greedy_ties_take_first_index(device):
    logits = torch.zeros(3, 700, device=device)
    logits[1, 600] = 1.0
    logits[1, 650] = 1.0  # same chunk as 600 at the interpreter's 512 columns? no: a later one
    logits[2, 100] = 2.0
    logits[2, 612] = 2.0  # tie across chunks
    tokens, probs = sample_head(
        logits, torch.zeros(3, device=device), torch.zeros(3, dtype=torch.long, device=device)
    )
    assert tokens.tolist() == [0, 600, 100]
    torch.testing.assert_close(probs[0], torch.tensor(1 / 700, device=device))


@pytest.mark.parametrize("cfg_scale", [0.0, 1.5])
def test_cfg_greedy_matches_reference(device, cfg_scale):
    num_rows, vocab = 4, 777
    cond = torch.randn(num_rows, vocab, device=device).bfloat16()
    uncond = torch.randn(num_rows, vocab, device=device).bfloat16()
    banned = torch.rand(num_rows, vocab, device=device) < 0.2
    cond[banned] = NEG_INF
    uncond[banned] = NEG_INF
    uncond[0, 5] = NEG_INF  # -inf in one row only: banned too
    cond[0, 5] = 1e4
    args = (torch.zeros(num_rows, device=device), torch.arange(num_rows, device=device), uncond, cfg_scale)
    tokens, probs = sample_head(cond, *args)
    ref_tokens, ref_probs = sample_head_ref(cond, *args)
    assert tokens.tolist() == ref_tokens.tolist()
    assert int(tokens[0]) != 5
    torch.testing.assert_close(probs, ref_probs, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("num_splits", [2, 3, 7])
@pytest.mark.parametrize("with_cfg", [False, True])
def test_split_rows_give_the_same_tokens(device, num_splits, with_cfg):
    """Vocabulary split across programs and merged: the same tokens as one program per row (greedy
    and sampled rows), probabilities equal up to rounding. At the interpreter's 512-column chunks,
    3000 columns make 6 chunks: 7 splits leave one empty."""
    num_rows, vocab = 6, 3000
    logits = (torch.randn(num_rows, vocab, device=device) * 3).bfloat16()
    logits[0, 2999] = 40.0  # winner in the last, partial chunk
    logits[1, 100] = logits[1, 2600] = 40.0  # tie across splits: the first index wins
    logits[2, 512:1024] = NEG_INF  # a whole split range banned
    uncond = (torch.randn(num_rows, vocab, device=device) * 3).bfloat16() if with_cfg else None
    if with_cfg:
        uncond[2, 512:1024] = NEG_INF
        uncond[0, 2999] = uncond[1, 100] = uncond[1, 2600] = 40.0
    temperature = torch.tensor([0.0, 0.0, 0.0, 0.7, 1.0, 1.3], device=device)
    seeds = torch.arange(100, 100 + num_rows, device=device)
    one_tokens, one_probs = sample_head(logits, temperature, seeds, uncond, 1.0, num_splits=1)
    tokens, probs = sample_head(logits, temperature, seeds, uncond, 1.0, num_splits=num_splits)
    assert tokens.tolist() == one_tokens.tolist()
    assert tokens[:3].tolist() == [2999, 100, sample_head_ref(logits, temperature, seeds, uncond, 1.0)[0][2]]
    torch.testing.assert_close(probs, one_probs, rtol=1e-5, atol=1e-8)


def test_choose_head_splits():
    # one sequence's 32-token block over LLaDA's vocabulary on a 132-SM GPU: 9 splits
    assert choose_head_splits(32, 126464, 2048, 132) == 9
    assert choose_head_splits(256, 126464, 2048, 132) == 2
    assert choose_head_splits(2048, 126464, 2048, 132) == 1
    assert choose_head_splits(1, 126464, 2048, 132) == 15  # at least 4 chunks per split
    assert choose_head_splits(1, 4096, 2048, 132) == 1  # too small to split
    assert choose_head_splits(32, 126464, 2048, 0) == 1  # no GPU


def test_sampling_is_reproducible_and_seeded(device):
    logits = torch.randn(300, device=device).expand(6, 300)  # row stride 0
    temperature = torch.full((6,), 1.0, device=device)
    seeds = torch.tensor([7, 7, 8, 9, 10, 11], device=device)
    first = sample_head(logits, temperature, seeds)
    second = sample_head(logits, temperature, seeds)
    assert first[0].tolist() == second[0].tolist()
    assert int(first[0][0]) == int(first[0][1])  # same seed, same draw
    assert len(set(first[0].tolist())) > 1  # different seeds, not all the same draw
    assert ((first[0] >= 0) & (first[0] < 300)).all()


@pytest.mark.parametrize(
    "vocab,temp,cfg_scale,num_draws",
    [(37, 0.7, 0.0, 500), (600, 1.0, 2.0, 300)],  # interpreter: ~10 ms per row; the gpu tier draws 65k
)
def test_sampling_distribution(device, vocab, temp, cfg_scale, num_draws):
    """Many seeds on one row: the histogram of tokens fits softmax(l / T) (chi-square, p = 1e-4)."""
    logits = torch.randn(vocab, device=device) * 2
    if vocab > 64:  # put most of the mass on a few tokens spread over both chunks
        logits[torch.tensor([3, 200, 511, 512, 590, vocab - 1], device=device)] += 8.0
    logits[vocab // 2] = NEG_INF
    uncond = torch.randn(vocab, device=device) if cfg_scale else None
    guided = logits if uncond is None else uncond + (cfg_scale + 1) * (logits - uncond)
    guided = guided.masked_fill(torch.isneginf(logits), NEG_INF)
    target = _softmax64(guided.cpu() / temp)
    rows = logits.expand(num_draws, vocab)
    tokens, probs = sample_head(
        rows,
        torch.full((num_draws,), temp, device=device),
        torch.arange(1000, 1000 + num_draws, device=device),
        None if uncond is None else uncond.expand(num_draws, vocab),
        cfg_scale,
    )
    tokens = tokens.cpu()
    assert ((tokens >= 0) & (tokens < vocab)).all()
    assert (tokens != vocab // 2).all(), "a banned token was sampled"
    counts = torch.bincount(tokens, minlength=vocab)
    stat, dof = chi_square(counts, target)
    assert stat < chi_square_critical(dof), f"chi-square {stat:.1f} over {dof} dof"
    # confidence: the un-tempered probability of the drawn token
    torch.testing.assert_close(probs.cpu().double(), _softmax64(guided.cpu())[tokens], rtol=2e-5, atol=1e-9)


def test_reference_sampler_distribution():
    """The float64 reference itself fits the law (guards the test statistic, not the kernel)."""
    vocab, num_draws = 37, 2000
    logits = torch.randn(vocab) * 2
    tokens, _ = sample_head_ref(
        logits.expand(num_draws, vocab), torch.full((num_draws,), 0.7), torch.arange(num_draws)
    )
    stat, dof = chi_square(torch.bincount(tokens, minlength=vocab), _softmax64(logits / 0.7))
    assert stat < chi_square_critical(dof)


def test_sampling_rejects_bad_inputs(device):
    logits = torch.randn(2, 10, device=device)
    with pytest.raises(AssertionError):
        sample_head(
            logits,
            torch.zeros(2, dtype=torch.float64, device=device),
            torch.zeros(2, dtype=torch.long, device=device),
        )
    with pytest.raises(AssertionError):
        sample_head(logits, torch.zeros(2, device=device), torch.zeros(2, dtype=torch.int32, device=device))
    with pytest.raises(AssertionError):
        sample_head(
            logits.t(), torch.zeros(10, device=device), torch.zeros(10, dtype=torch.long, device=device)
        )


def test_max_probability_matches_its_reference():
    """The launcher's temperature-0 probability against the row's largest softmax probability."""
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 1500, generator=gen) * 4
    logits[1, :700] = NEG_INF
    logits[2] = logits[2].round()  # ties
    torch.testing.assert_close(max_probability(logits), max_probability_ref(logits), rtol=1e-5, atol=1e-7)
