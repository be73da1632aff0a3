"""Candidate tokens and confidences for every committable position of a step, in one batch.

Rows are the masked positions of the active blocks of all requests taking the step, [M, V] fp32
guided logits. Candidates come from `ops.sample_head` (the Triton sampling head on CUDA, its torch
reference elsewhere): argmax at temperature 0, a float64-grade Gumbel-max sample from
softmax(logits / T) otherwise, and the softmax probability of the candidate under the un-tempered
logits (`low_confidence`). `random` remasking draws the confidence uniformly instead.

Randomness is counter-based (kernels/counter_rng.py): every draw is keyed by (request seed, the
request's step count, canvas position, stream), so a request's tokens depend on nothing else in its
batch, and a step whose forward was skipped (reused logits) draws what it would have drawn anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels.counter_rng import uniform64

# Draws other than the Gumbel noise (columns 0..V-1 of a row's key) take negative columns.
STREAM_CONFIDENCE, STREAM_REVEAL = -1, -2


@dataclass
class RowParams:
    """Per-row settings of a step, [M] tensors on the logits' device (one row per masked position)."""

    keys: torch.Tensor  # int64: counter_rng.row_keys of (seed, step) and position
    temperature: torch.Tensor  # fp32
    random_confidence: torch.Tensor  # bool: `random` remasking
    ban_stop_confidence: torch.Tensor  # bool: confidence_eos_eot_inf
    any_random: bool  # some row uses `random` remasking (known on the host: no sync)


def row_uniform(keys: torch.Tensor, stream: int) -> torch.Tensor:
    """One float64 uniform per row, for `stream`."""
    return uniform64(keys, torch.full((1,), stream, dtype=torch.int64, device=keys.device))[:, 0]


def sample_candidates(
    logits: torch.Tensor, rows: RowParams, stop_ids: torch.Tensor, ops
) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [M, V] fp32 (guided, banned columns at -inf) -> (tokens [M] int64, confidence [M] fp32)."""
    tokens, probs = ops.sample_head(logits, rows.temperature, rows.keys)
    confidence = probs.float()
    if rows.any_random:
        u = row_uniform(rows.keys, STREAM_CONFIDENCE).float()
        confidence = torch.where(rows.random_confidence, u, confidence)
    banned = rows.ban_stop_confidence & torch.isin(tokens, stop_ids)
    confidence = confidence.masked_fill(banned, float("-inf"))
    return tokens, confidence
