"""top_k / top_p / min_p and logprobs: the filter on hand-made logits, then through the engine."""

import math

import pytest
import torch

from engine import LLM, SamplingParams
from engine.sampler import filter_logits

INF = float("-inf")


def _kept(out):
    return [torch.isfinite(row).nonzero().flatten().tolist() for row in out]


def test_filters_keep_what_each_rule_says():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]] * 4))
    t = torch.ones(4)
    # top_k 2 on row 0, off (0) on the others
    assert _kept(filter_logits(logits, t, torch.tensor([2, 0, 0, 0]), None, None)) == [
        [0, 1],
        *[[0, 1, 2, 3, 4]] * 3,
    ]
    # top_p: the fewest tokens whose mass reaches p (0.5 -> the best alone; 0.8 -> three; 1 -> all)
    assert _kept(filter_logits(logits, t, None, torch.tensor([0.5, 0.8, 1.0, 0.01]), None)) == [
        [0],
        [0, 1, 2],
        [0, 1, 2, 3, 4],
        [0],
    ]
    # min_p: probability at least min_p x the best (0.3 x 0.5 = 0.15 keeps 0, 1, 2)
    assert _kept(filter_logits(logits, t, None, None, torch.tensor([0.3, 0.0, 1.0, 0.25]))) == [
        [0, 1, 2],
        [0, 1, 2, 3, 4],
        [0],
        [0, 1, 2],
    ]
    # temperature sharpens before top_p: at T = 0.5 the best token holds 0.5^2 / sum(p^2) ~ 0.71
    sharp = filter_logits(logits[:1], torch.tensor([0.5]), None, torch.tensor([0.7]), None)
    assert _kept(sharp) == [[0]]
    assert torch.equal(filter_logits(logits, t, None, None, None), logits)  # off: unchanged copy


def test_top_k_keeps_ties_with_the_kth():
    logits = torch.tensor([[3.0, 1.0, 1.0, 0.0]])
    assert _kept(filter_logits(logits, torch.ones(1), torch.tensor([2]), None, None)) == [[0, 1, 2]]


@pytest.fixture(scope="module")
def llm(tiny_ckpt):
    return LLM(tiny_ckpt, device="cpu", dtype="float32", kernels="torch")


PROMPTS = [[7, 8, 9, 10, 11], [40, 41, 3]]


def test_top_k_1_and_tiny_top_p_sample_the_greedy_tokens(llm):
    base = dict(max_tokens=12, block_length=4, ignore_eos=True)
    greedy = [
        o.token_ids for o in llm.generate(prompt_token_ids=PROMPTS, sampling_params=SamplingParams(**base))
    ]
    for narrow in (dict(top_k=1), dict(top_p=1e-6), dict(min_p=1.0)):
        params = SamplingParams(**base, temperature=5.0, seed=3, **narrow)
        assert [o.token_ids for o in llm.generate(prompt_token_ids=PROMPTS, sampling_params=params)] == greedy
    wide = SamplingParams(**base, temperature=5.0, seed=3)
    assert [o.token_ids for o in llm.generate(prompt_token_ids=PROMPTS, sampling_params=wide)] != greedy


def test_filters_do_not_touch_their_batch_neighbours(llm):
    sampled = SamplingParams(max_tokens=12, block_length=4, temperature=1.0, seed=8, ignore_eos=True)
    alone = llm.generate(prompt_token_ids=PROMPTS[:1], sampling_params=sampled)[0].token_ids
    narrow = SamplingParams(max_tokens=8, block_length=4, temperature=1.0, top_k=3, top_p=0.5, seed=1)
    together = llm.generate(prompt_token_ids=PROMPTS, sampling_params=[sampled, narrow])
    assert together[0].token_ids == alone


def test_logprobs_are_those_of_the_committing_forward(llm):
    params = SamplingParams(max_tokens=8, steps=8, block_length=8, logprobs=3, ignore_eos=True)
    out = llm.generate(prompt_token_ids=PROMPTS, sampling_params=params)
    plain = llm.generate(
        prompt_token_ids=PROMPTS, sampling_params=SamplingParams(max_tokens=8, ignore_eos=True)
    )
    for o, p in zip(out, plain, strict=True):
        assert o.token_ids == p.token_ids and p.logprobs is None
        assert len(o.logprobs) == len(o.token_ids) == 8
        for token, (logprob, alternatives) in zip(o.token_ids, o.logprobs, strict=True):
            assert logprob <= 0.0 and len(alternatives) == 3
            # greedy: the committed token is the best alternative, with the same log-probability
            assert alternatives[0][0] == token and math.isclose(alternatives[0][1], logprob, abs_tol=1e-5)
            assert [lp for _, lp in alternatives] == sorted((lp for _, lp in alternatives), reverse=True)
    zero = llm.generate(
        prompt_token_ids=PROMPTS[:1], sampling_params=SamplingParams(max_tokens=4, logprobs=0)
    )
    assert all(alts == [] for _, alts in zero[0].logprobs)


def test_logits_eos_inf_never_commits_eos():
    """The demo model pads its answers with EOS; banned in the guided logits of the row that asks,
    EOS never commits there, while its batch neighbour still pads."""
    demo = LLM(device="cpu", dtype="float32", kernels="torch")
    eos = demo.engine.model_config.eos_token_id
    conv = [{"role": "user", "content": "reverse abcde"}]
    ban = SamplingParams(max_tokens=24, logits_eos_inf=True, cfg_scale=0.5, ignore_eos=True)
    free = SamplingParams(max_tokens=24, ignore_eos=True)
    outs = demo.chat([conv, conv], [ban, free])
    assert eos in outs[1].token_ids
    assert eos not in outs[0].token_ids and len(outs[0].token_ids) == 24


def test_eos_banned_confidences_never_stall_a_block():
    """confidence_eos_eot_inf puts EOS/EoT candidates at -inf; padded beside a wider request they
    must still rank above padding, so every scheduled token commits and the request finishes."""
    demo = LLM(device="cpu", dtype="float32", kernels="torch")
    conv = [{"role": "user", "content": "reverse abcde"}]
    a = SamplingParams(max_tokens=16, steps=2, block_length=16, confidence_eos_eot_inf=True, ignore_eos=True)
    b = SamplingParams(max_tokens=64, steps=64, ignore_eos=True)
    outs = demo.chat([conv, conv], [a, b])
    assert len(outs[0].token_ids) == 16 and outs[0].num_steps == 2
    assert outs[0].finish_reason == "length" and len(outs[1].token_ids) == 64


def test_top_p_one_is_a_no_op_beside_a_top_p_row():
    """fp32 cumulative sums reach 1.0 in a long peaked tail; a row with top_p 1 must keep it all."""
    logits = torch.randn(2, 126464, generator=torch.Generator().manual_seed(0)) * 3
    out = filter_logits(logits, torch.ones(2), None, torch.tensor([0.5, 1.0]), None)
    assert torch.isfinite(out[1]).all() and not torch.isfinite(out[0]).all()


def test_top_k_rows_without_top_k_keep_everything():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    out = filter_logits(logits, torch.ones(3), torch.tensor([3, 0, 1]), None, None, max_k=3)
    assert [int(torch.isfinite(r).sum()) for r in out] == [3, 50, 1]


def test_a_failed_generate_leaves_no_request_and_no_page_behind(tiny_ckpt, monkeypatch):
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", kernels="torch", cache="prefix", kv_cache_memory=0.01)
    real = llm.engine.runner.execute
    calls = []

    def flaky(sched):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("device lost")
        return real(sched)

    monkeypatch.setattr(llm.engine.runner, "execute", flaky)
    params = SamplingParams(max_tokens=8, block_length=4, ignore_eos=True)
    with pytest.raises(RuntimeError, match="device lost"):
        llm.generate(prompt_token_ids=PROMPTS, sampling_params=params)
    assert not llm.engine.has_unfinished() and llm.engine.kv_cache.allocator.num_used == 0
    assert len(llm.generate(prompt_token_ids=PROMPTS, sampling_params=params)) == 2
