"""Scheduler and request bookkeeping with hand-made step outputs: no model."""

import pytest
import torch

from engine.detokenize import find_stop, streamable
from engine.outputs import Commit, StepOutput
from engine.request import Request, RequestStatus
from engine.sampling_params import SamplingParams
from engine.scheduler import Scheduler

MASK, EOS, EOT = 99, 1, 5


def make(rid, prompt_len=3, **kw):
    params = SamplingParams(**kw).resolve()
    return Request(rid, list(range(10, 10 + prompt_len)), params, MASK)


def detok(ids):
    return "".join(chr(ord("a") + (t % 26)) for t in ids if t not in (EOS, EOT))


def step_with(sched, schedule_out, tokens_for):
    """Commit what each request's exact schedule asks for, leftmost masks first."""
    commits = {}
    for req in schedule_out.forward + schedule_out.reuse:
        pos = req.masked_positions()[: req.num_to_commit()]
        commits[req.request_id] = Commit(pos, [tokens_for(req, p) for p in pos])
    return sched.update(schedule_out, StepOutput(commits, 0, 0))


def run(sched, tokens_for, max_steps=100):
    outputs = []
    for _ in range(max_steps):
        if not sched.num_unfinished:
            break
        outputs += step_with(sched, sched.schedule(), tokens_for)
    return outputs


def test_request_status_is_ordered():
    assert not RequestStatus.RUNNING.is_finished
    assert all(
        s.is_finished
        for s in (
            RequestStatus.FINISHED_STOPPED,
            RequestStatus.FINISHED_LENGTH,
            RequestStatus.FINISHED_ABORTED,
        )
    )
    assert RequestStatus.FINISHED_LENGTH.finish_reason == "length"


def test_block_schedule_spreads_the_remainder_first():
    req = make("a", max_tokens=10, steps=4, block_length=10)
    assert [req.commits_at(i) for i in range(req.block_steps)] == [3, 3, 2, 2]
    short = make("b", max_tokens=10, steps=4, block_length=4)  # blocks 4, 4, 2; steps 2, 1, 1
    assert [short.commits_at(i) for i in range(short.block_steps)] == [2, 2]
    assert [short.params.steps_for_block(b) for b in range(3)] == [2, 1, 1]


def test_scheduled_commits_are_capped_and_the_last_step_takes_the_rest():
    req = make("a", max_tokens=10, steps=4, block_length=10)  # schedule 3, 3, 2, 2
    assert req.scheduled_commits() == 3
    req.commit([req.prompt_len + i for i in range(9)], [1] * 9)  # a parallel mode took 9 at once
    assert req.scheduled_commits() == 1  # capped by the one mask left
    req = make("b", max_tokens=10, steps=4, block_length=10)
    for _ in range(3):
        req.commit([], [])  # steps that committed nothing (a mixed batch)
    assert req.scheduled_commits() == 10  # the block's last step commits every mask left


def test_admission_respects_max_num_seqs_and_token_budget():
    sched = Scheduler(max_num_seqs=2, max_num_batched_tokens=40, stop_token_ids=(EOS, EOT))
    for rid in "abc":
        sched.add(make(rid, max_tokens=8))  # canvas 11 positions each
    out = sched.schedule()
    assert [r.request_id for r in out.forward] == ["a", "b"] and len(sched.waiting) == 1
    cfg = Scheduler(max_num_seqs=8, max_num_batched_tokens=40, stop_token_ids=(EOS,))
    cfg.add(make("x", max_tokens=8, cfg_scale=1.0))  # 22 positions: two rows
    cfg.add(make("y", max_tokens=8, cfg_scale=1.0))
    assert [r.request_id for r in cfg.schedule().forward] == ["x"]
    with pytest.raises(ValueError, match="max_num_batched_tokens"):
        cfg.add(make("z", prompt_len=30, max_tokens=8, cfg_scale=1.0))


def test_requests_join_and_leave_between_steps():
    sched = Scheduler(max_num_seqs=4, max_num_batched_tokens=1000, stop_token_ids=(EOS,), detokenize=detok)
    sched.add(make("short", max_tokens=2, steps=2))
    sched.add(make("long", max_tokens=6, steps=6, block_length=3))
    outs = step_with(sched, sched.schedule(), lambda r, p: 20)
    assert outs == []
    sched.add(make("late", max_tokens=2, steps=1))
    outs = step_with(sched, sched.schedule(), lambda r, p: 20)
    assert {o.request_id for o in outs} == {"short", "late"}
    assert all(o.finished and o.finish_reason == "length" for o in outs)
    assert [r.request_id for r in sched.running] == ["long"]
    outs = run(sched, lambda r, p: 20)
    assert [o.finished for o in outs] == [False, True]  # one output per finished block
    assert outs[-1].token_ids == [20] * 6 and outs[-1].text == "u" * 6


def test_eos_in_a_finished_block_stops_early_and_fills_eos():
    sched = Scheduler(
        max_num_seqs=4, max_num_batched_tokens=1000, stop_token_ids=(EOS, EOT), detokenize=detok
    )
    req = make("a", max_tokens=12, steps=12, block_length=4)
    sched.add(req)
    # Second block holds the answer's end: 21 21 EOT EOS; blocks 3 never runs.
    outs = run(sched, lambda r, p: {9: EOT, 10: EOS}.get(p - r.prompt_len + 3, 21))
    assert len(outs) == 2 and outs[-1].finished and outs[-1].finish_reason == "stop"
    assert outs[-1].token_ids == [21] * 6
    assert outs[-1].num_steps == 8
    assert req.canvas[req.prompt_len + 7 :] == [EOS] * 5


def test_without_early_stop_every_block_runs_but_text_stops():
    sched = Scheduler(max_num_seqs=4, max_num_batched_tokens=1000, stop_token_ids=(EOS,), detokenize=detok)
    sched.add(make("a", max_tokens=8, steps=8, block_length=4, early_stop=False))
    outs = run(sched, lambda r, p: EOS if p - r.prompt_len == 1 else 22)
    assert len(outs) == 2 and outs[-1].num_steps == 8
    assert outs[-1].finish_reason == "stop" and outs[-1].token_ids == [22]


def test_ignore_eos_keeps_going():
    sched = Scheduler(max_num_seqs=4, max_num_batched_tokens=1000, stop_token_ids=(EOS,), detokenize=detok)
    sched.add(make("a", max_tokens=4, steps=4, ignore_eos=True))
    outs = run(sched, lambda r, p: EOS if p - r.prompt_len == 1 else 22)
    assert outs[-1].token_ids == [22, EOS, 22, 22] and outs[-1].finish_reason == "length"


def test_stop_string_cuts_text_and_finishes():
    sched = Scheduler(max_num_seqs=4, max_num_batched_tokens=1000, stop_token_ids=(EOS,), detokenize=detok)
    sched.add(make("a", max_tokens=8, steps=8, block_length=4, stop=["wx"]))
    outs = run(sched, lambda r, p: 20 + p - r.prompt_len)  # text "uvwxyzab"
    assert len(outs) == 1 and outs[0].text == "uv" and outs[0].finish_reason == "stop"
    assert outs[0].token_ids == [20, 21]  # cut where the text is cut


def test_abort_frees_the_slot():
    sched = Scheduler(max_num_seqs=1, max_num_batched_tokens=1000, stop_token_ids=(EOS,))
    sched.add(make("a", max_tokens=4))
    sched.add(make("b", max_tokens=4))
    sched.schedule()
    out = sched.abort("a")
    assert out.finished and out.finish_reason == "abort"
    assert [r.request_id for r in sched.schedule().forward] == ["b"]
    assert sched.abort("missing") is None


def test_unchanged_canvas_is_scheduled_for_reuse():
    sched = Scheduler(max_num_seqs=4, max_num_batched_tokens=1000, stop_token_ids=(EOS,))
    req = make("a", max_tokens=4)
    sched.add(req)
    assert sched.schedule().forward == [req]
    req.reuse_logits = (req.canvas_version, torch.zeros(4, 8))
    out = sched.schedule()
    assert out.reuse == [req] and out.forward == []
    req.commit([3], [7])
    assert sched.schedule().forward == [req]


def test_streamable_holds_back_partial_stop_and_broken_utf8():
    assert streamable("hello wor", ["world"]) == "hello "
    assert streamable("abc\ufffd", []) == "abc"
    assert streamable("abc", ["x"]) == "abc"
    assert find_stop("a STOP b stop", ["stop", "STOP"]) == 2


def test_stop_string_without_early_stop_still_reports_stop():
    sched = Scheduler(max_num_seqs=4, max_num_batched_tokens=1000, stop_token_ids=(EOS,), detokenize=detok)
    sched.add(make("a", max_tokens=8, steps=8, block_length=4, stop=["wx"], early_stop=False))
    outs = run(sched, lambda r, p: 20 + p - r.prompt_len)  # text "uvwxyzab", stop in block 1
    assert [o.finished for o in outs] == [False, True]  # every block runs
    assert outs[-1].text == "uv" and outs[-1].finish_reason == "stop"
