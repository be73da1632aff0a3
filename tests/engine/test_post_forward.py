"""The post-forward's short path for plain batches (fixed schedule, temperature 0, low_confidence)
against its general path, on the same requests and logits: the same commits, tie breaks included."""

import pytest
import torch

from engine import LLM, SamplingParams
from kernels.sampling_head import max_probability_ref, sample_head_ref


@pytest.fixture(scope="module")
def running(tiny_ckpt):
    """An engine with plain requests mid-block: different masked counts (padding), block lengths and
    commit counts (steps that do not divide the block: 3, 3, 2 of 8)."""
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", kernels="torch", kv_cache_memory=0.01)
    engine = llm.engine
    settings = [
        dict(max_tokens=16, steps=16, block_length=8),
        dict(max_tokens=16, steps=6, block_length=8),
        dict(max_tokens=12, steps=4, block_length=12, cache="dual"),
        dict(max_tokens=9, steps=9, block_length=3),
        dict(max_tokens=10, steps=2, block_length=5, cache="prefix"),
    ]
    for i, s in enumerate(settings):
        engine.add_request(f"r{i}", [5 + i, 6, 7, 8][: 2 + i % 3], SamplingParams(ignore_eos=True, **s))
    for _ in range(2):
        engine.step()
    requests = list(engine.scheduler.running)
    assert len({len(r.masked) for r in requests}) > 1  # padded
    return engine, requests


def _commits(result):
    return {rid: (c.positions, c.tokens) for rid, c in result.items()}


@pytest.mark.parametrize("kind", ["random", "ties", "flat", "nan"])
@torch.inference_mode()  # as the runner calls it
def test_plain_path_commits_what_the_general_path_commits(running, kind):
    engine, requests = running
    pf = engine.runner.post_forward
    settings = pf.table.settings(requests)
    assert settings.plain
    gen = torch.Generator().manual_seed(0)
    rows, vocab = sum(len(r.masked) for r in requests), engine.spec.vocab_size
    for _ in range(5):
        logits = torch.randn(rows, vocab, generator=gen)
        if kind == "ties":  # few distinct values: ties in tokens and in confidences
            logits = (logits * 2).round() / 2
        elif kind == "flat":  # every row the same: all confidences tie
            logits = logits[:1].expand(rows, vocab).contiguous()
        elif kind == "nan":  # a broken forward: NaN rows rank as confidence 0 on both paths
            logits[::3] = float("nan")
        for subset in (requests, requests[:1], requests[1:3]):
            m = sum(len(r.masked) for r in subset)
            plain = pf._plain_commits(subset, logits[:m].clone())
            general = pf._general_commits(subset, logits[:m].clone(), pf.table.settings(subset))
            assert _commits(plain) == _commits(general)
            assert any(c.positions for c in plain.values())


def test_max_probability_is_the_probability_of_the_greedy_token():
    gen = torch.Generator().manual_seed(1)
    logits = (torch.randn(64, 300, generator=gen) * 3).round()  # ties
    logits[:8, :100] = float("-inf")
    zeros = torch.zeros(64)
    _, probs = sample_head_ref(logits, zeros, torch.zeros(64, dtype=torch.int64))
    assert torch.equal(max_probability_ref(logits), probs)
