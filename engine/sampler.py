"""Candidate tokens and confidences for every committable position of a step, in one batch.

Rows are the masked positions of the active blocks of all requests taking the step, [M, V] fp32
guided logits. Candidates come from `ops.sample_head` (the Triton sampling head on CUDA, its torch
reference elsewhere): argmax at temperature 0, a float64-grade Gumbel-max sample from
softmax(logits / T) otherwise, and the softmax probability of the candidate under the un-tempered
logits (`low_confidence`). `random` remasking draws the confidence uniformly instead.

`entropy` and `margin` are Dream's other two confidences (its generation utilities' alg "entropy" and
"topk_margin"): with p = softmax(logits) of the position, the negative entropy sum(p log p) and the
gap p_top1 - p_top2; higher commits first. Dream computes them (as its p[x0]) on the distribution it
samples from: logits / T, then its top_p / top_k cut. Here they take the same distribution as our
`low_confidence`: the guided logits (EOS ban included) at temperature 1, before top_k / top_p / min_p,
so at temperature 0 without top_p / top_k they are Dream's (which takes log(p + 1e-10): at most
V * 1e-10 from sum(p log p)). The sampling head (Triton on CUDA) does not compute them: for the rows
that ask for them they come from the guided logits in torch, on CPU and CUDA alike.

Randomness is counter-based (kernels/counter_rng.py): every draw is keyed by (request seed, the
request's step count, canvas position, stream), so a request's tokens depend on nothing else in its
batch, and a step whose forward was skipped (reused logits) draws what it would have drawn anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from kernels.counter_rng import uniform64

# Draws other than the Gumbel noise (columns 0..V-1 of a row's key) take negative columns.
STREAM_CONFIDENCE, STREAM_REVEAL = -1, -2


@dataclass
class RowParams:
    """Per-row settings of a step, [M] tensors on the logits' device (one row per masked position)."""

    keys: torch.Tensor  # int64: counter_rng.row_keys of (seed, step) and position
    temperature: torch.Tensor  # fp32
    # bool: `random` remasking; None when no row uses it (known on the host: no sync)
    random_confidence: torch.Tensor | None = None
    ban_stop_confidence: torch.Tensor | None = None  # bool: confidence_eos_eot_inf; None: no row
    # "entropy" / "margin" -> the rows (int64 indices, built on the host) whose remasking it is
    measured: dict[str, torch.Tensor] = field(default_factory=dict)


def row_uniform(keys: torch.Tensor, stream: int) -> torch.Tensor:
    """One float64 uniform per row, for `stream`."""
    return uniform64(keys, torch.full((1,), stream, dtype=torch.int64, device=keys.device))[:, 0]


def filter_logits(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor | None,
    top_p: torch.Tensor | None,
    min_p: torch.Tensor | None,
    max_k: int | None = None,
) -> torch.Tensor:
    """A copy of rows [R, V] with the tokens outside top_k, then min_p and top_p of softmax(logits / T)
    set to -inf. Per row (None: off for all): top_k [R] int64 (0: off), top_p [R] (1: off), min_p [R]
    (0: off). The best token always stays; tokens tied with the k-th best stay too."""
    out = logits.clone()
    vocab = logits.shape[1]
    if top_k is not None:
        # max_k: the largest top_k asked for (the engine knows it on the host: no sync); rows with
        # top_k off keep all.
        width = min(int(top_k.max()) if max_k is None else max_k, vocab)
        if width > 0:
            kth = torch.topk(logits, width, dim=1).values.gather(1, (top_k.clamp(1, width) - 1)[:, None])
            kth = torch.where(top_k[:, None] > 0, kth, float("-inf"))
            out.masked_fill_(logits < kth, float("-inf"))
    if top_p is None and min_p is None:
        return out
    t = torch.where(temperature > 0, temperature, 1.0)[:, None]
    probs = torch.softmax(out / t, dim=1)
    if min_p is not None:
        keep_from = min_p[:, None] * probs.max(dim=1, keepdim=True).values
        out.masked_fill_(probs < keep_from, float("-inf"))
    if top_p is not None:
        sorted_probs, order = torch.sort(probs, dim=1, descending=True)
        before = sorted_probs.cumsum(dim=1) - sorted_probs  # mass of the better tokens
        # Rows with top_p 1 keep everything: fp32 rounding can bring `before` to 1.0 in a long tail.
        cut = (before >= top_p[:, None]) & (top_p < 1.0)[:, None]
        drop = torch.zeros_like(out, dtype=torch.bool).scatter(1, order, cut)
        out.masked_fill_(drop, float("-inf"))
    return out


def distribution_confidence(logits: torch.Tensor, measure: str) -> torch.Tensor:
    """rows [R, V] fp32 -> [R] fp32: with p = softmax(logits), "entropy": sum(p log p) (0 log 0 = 0, so
    -inf columns count for nothing); "margin": the best probability minus the second best."""
    probs = torch.softmax(logits, dim=-1)
    if measure == "entropy":
        return torch.special.xlogy(probs, probs).sum(dim=-1)
    top2 = torch.topk(probs, 2, dim=-1).values
    return top2[:, 0] - top2[:, 1]


def sample_candidates(
    logits: torch.Tensor,
    rows: RowParams,
    stop_ids: torch.Tensor,
    ops,
    sample_logits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [M, V] fp32 (guided, banned columns at -inf) -> (tokens [M] int64, confidence [M] fp32:
    the candidate's probability under `logits`, a uniform draw for `random` remasking, or
    `distribution_confidence` of `logits` for the rows in `rows.measured`).
    `sample_logits`: the rows to draw from instead, when top_k / top_p / min_p narrowed them (the
    confidence stays the model's probability)."""
    if sample_logits is None:
        tokens, probs = ops.sample_head(logits, rows.temperature, rows.keys)
    else:
        tokens, _ = ops.sample_head(sample_logits, rows.temperature, rows.keys)
        probs = torch.softmax(logits, dim=-1).gather(1, tokens[:, None]).squeeze(1)
    confidence = probs.float()
    if rows.random_confidence is not None:
        u = row_uniform(rows.keys, STREAM_CONFIDENCE).float()
        confidence = torch.where(rows.random_confidence, u, confidence)
    for measure, at in rows.measured.items():
        measured = distribution_confidence(logits.index_select(0, at), measure)
        confidence = confidence.index_copy(0, at, measured)
    if rows.ban_stop_confidence is not None:
        banned = rows.ban_stop_confidence & torch.isin(tokens, stop_ids)
        confidence = confidence.masked_fill(banned, float("-inf"))
    return tokens, confidence
