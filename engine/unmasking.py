"""Unmasking policies: which masked positions of each request's active block commit this step.

The step's confidences come as one padded matrix [B, W]: row b holds request b's masked positions
(W = the most any request has; padding is -inf and invalid). Each policy is one small class with one
method, `select(step) -> [B, W] bool`, over the whole batch; `choose` runs the policies the batch uses
and takes each row's from its own (`MODES` gives the ids). No Python loop over requests, no host sync.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MODES = ("schedule", "threshold", "factor", "continuous")  # SamplingParams.mode -> id by position


@dataclass
class PolicyStep:
    confidence: torch.Tensor  # [B, W] fp32, -inf where invalid
    valid: torch.Tensor  # [B, W] bool: a masked position of the row's block
    mode: torch.Tensor  # [B] int64, index into MODES
    num_commit: torch.Tensor  # [B] int64: schedule commits this step (<= the row's masked count)
    max_commit: int  # max(num_commit), known on the host
    threshold: torch.Tensor  # [B] fp32 (threshold rows)
    factor: torch.Tensor  # [B] fp32 (factor rows)
    reveal: torch.Tensor  # [B, W] bool: continuous-time reveals drawn for this step


class SchedulePolicy:
    """Exact mode (LLaDA's reference): the top-k by confidence, k fixed up front per step."""

    def select(self, step: PolicyStep) -> torch.Tensor:
        chosen = torch.zeros_like(step.valid)
        if step.max_commit == 0:
            return chosen
        top = torch.topk(step.confidence, step.max_commit, dim=1).indices  # [B, kmax]
        rank = torch.arange(step.max_commit, device=top.device)
        return chosen.scatter(1, top, rank[None, :] < step.num_commit[:, None])


class ThresholdPolicy:
    """Fast-dLLM threshold: every position with confidence >= t, and always the best one."""

    def select(self, step: PolicyStep) -> torch.Tensor:
        chosen = (step.confidence >= step.threshold[:, None]) & step.valid
        best = step.confidence.argmax(dim=1, keepdim=True)
        return chosen.scatter(1, best, True)


class FactorPolicy:
    """Fast-dLLM factor: the longest prefix of sorted confidences with c_k >= 1 - f / (k + 1)."""

    def select(self, step: PolicyStep) -> torch.Tensor:
        values, order = torch.sort(step.confidence, dim=1, descending=True)
        k = torch.arange(1, values.shape[1] + 1, device=values.device, dtype=values.dtype)
        ok = values >= 1.0 - step.factor[:, None] / (k + 1)
        ok[:, 0] = True  # the best position always commits
        n = ok.long().cumprod(dim=1).sum(dim=1)
        rank = torch.arange(values.shape[1], device=values.device)
        return torch.zeros_like(step.valid).scatter(1, order, rank[None, :] < n[:, None])


class ContinuousPolicy:
    """SMDM/RADD continuous time: at step t -> s = t - 1/S of a block's S steps each masked position
    is revealed with probability 1 - s/t (all of them at the last step); the runner draws the reveals.
    With many steps most reveal nothing, and those steps reuse the previous forward."""

    def select(self, step: PolicyStep) -> torch.Tensor:
        return step.reveal & step.valid


POLICIES = {
    "schedule": SchedulePolicy(),
    "threshold": ThresholdPolicy(),
    "factor": FactorPolicy(),
    "continuous": ContinuousPolicy(),
}


def choose(step: PolicyStep, modes_used: set[str]) -> torch.Tensor:
    """[B, W] bool: each row's positions to commit, by its own policy."""
    chosen = None
    for name in modes_used:
        picked = POLICIES[name].select(step)
        if chosen is None:
            chosen = picked
        else:
            chosen = torch.where((step.mode == MODES.index(name))[:, None], picked, chosen)
    return chosen & step.valid


def reveal_probability(request) -> float:
    """Continuous sampler: the chance a masked position is revealed at this step of its block."""
    steps = request.block_steps
    t = 1.0 - request.step_in_block / steps
    return 1.0 - max(t - 1.0 / steps, 0.0) / t


def may_commit_nothing(request) -> bool:
    """Whether this step can leave the canvas unchanged, so that its output is worth keeping for
    reuse by the next step (exact: the network has no time input)."""
    mode = request.params.mode
    if mode == "continuous":
        return request.step_in_block + 1 < request.block_steps
    if mode != "schedule":
        return False
    # The canvas stays as it is only if this step commits nothing (counts never grow within a block);
    # a block with no more steps than tokens commits at every step.
    if request.block_steps <= request.block_tokens:
        return False
    step = request.step_in_block
    return step + 1 < request.block_steps and request.commits_at(step) == 0
