"""Unmasking policies: given the confidences of a block's masked positions, which commit now.

Each policy is one small class with one method, chosen by `SamplingParams.mode` from POLICIES.
"""

from __future__ import annotations

import torch


class SchedulePolicy:
    """Exact mode (LLaDA's reference): commit the top-k by confidence, k fixed up front per step."""

    def select(self, confidence: torch.Tensor, request) -> torch.Tensor:
        k = min(request.num_to_commit(), confidence.numel())
        return torch.topk(confidence, k).indices


class ThresholdPolicy:
    """Fast-dLLM threshold: every position with confidence >= t, and always the best one."""

    def select(self, confidence: torch.Tensor, request) -> torch.Tensor:
        chosen = confidence >= request.params.threshold
        chosen[torch.argmax(confidence)] = True
        return chosen.nonzero().flatten()


class FactorPolicy:
    """Fast-dLLM factor: the longest prefix of sorted confidences with c_k >= 1 - f / (k + 1)."""

    def select(self, confidence: torch.Tensor, request) -> torch.Tensor:
        values, order = torch.sort(confidence, descending=True)
        k = torch.arange(1, values.numel() + 1, device=values.device, dtype=values.dtype)
        ok = values >= 1.0 - request.params.factor / (k + 1)
        ok[0] = True  # the best position always commits
        n = int(ok.long().cumprod(0).sum())
        return order[:n]


class ContinuousPolicy:
    """SMDM/RADD continuous time: at step t -> s = t - 1/S of a block's S steps, each masked position
    is revealed independently with probability 1 - s/t (so every one at the last step). With many
    steps most reveal nothing, and those steps reuse the previous forward."""

    def select(self, confidence: torch.Tensor, request) -> torch.Tensor:
        steps = request.block_steps
        t = 1.0 - request.step_in_block / steps
        reveal_p = 1.0 - max(t - 1.0 / steps, 0.0) / t
        u = torch.rand(confidence.shape, device=confidence.device, generator=request.generator)
        return (u < reveal_p).nonzero().flatten()


POLICIES = {
    "schedule": SchedulePolicy(),
    "threshold": ThresholdPolicy(),
    "factor": FactorPolicy(),
    "continuous": ContinuousPolicy(),
}


def may_commit_nothing(request) -> bool:
    """Whether this step can leave the canvas unchanged, so that its output is worth keeping for
    reuse by the next step (exact: the network has no time input)."""
    mode = request.params.mode
    if mode == "continuous":
        return request.step_in_block + 1 < request.block_steps
    if mode != "schedule":
        return False
    nxt = request.step_in_block + 1
    return nxt < request.block_steps and request.commits_at(nxt) == 0
