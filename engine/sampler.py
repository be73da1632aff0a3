"""Candidate tokens and confidences for the masked positions of a request's active block.

Temperature 0 takes the argmax. Temperature > 0 draws from softmax(logits / T) by Gumbel-max in
float64 like LLaDA's reference, but vocabulary chunk by chunk, so float64 never covers the whole
vocabulary at once. Confidence (`low_confidence`) is the softmax probability of the candidate under
the un-tempered logits, computed in fp32; `random` draws it uniformly. All randomness comes from the
request's own generator, so a request's tokens do not depend on what else shares its batch.
"""

from __future__ import annotations

import torch

GUMBEL_CHUNK = 16384


def gumbel_argmax(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """A sample from softmax(logits / T) per row of [m, V] logits, via float64 Gumbel-max in chunks."""
    m, vocab = logits.shape
    best = torch.full((m,), float("-inf"), dtype=torch.float64, device=logits.device)
    best_idx = torch.zeros(m, dtype=torch.int64, device=logits.device)
    for start in range(0, vocab, GUMBEL_CHUNK):
        chunk = logits[:, start : start + GUMBEL_CHUNK].double() / temperature
        u = torch.rand(chunk.shape, dtype=torch.float64, device=logits.device, generator=generator)
        score = chunk - torch.log(-torch.log(u))
        value, idx = score.max(dim=-1)
        better = value > best
        best = torch.where(better, value, best)
        best_idx = torch.where(better, idx + start, best_idx)
    return best_idx


def sample_candidates(logits: torch.Tensor, request, ops=None) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [m, V] fp32 (guided, banned columns at -inf) -> (tokens [m] int64, confidence [m])."""
    params, gen = request.params, request.generator
    if ops is not None and getattr(ops, "name", "torch") == "triton":
        m = logits.shape[0]
        temps = torch.full((m,), float(params.temperature), device=logits.device)
        seeds = torch.randint(0, 2**62, (m,), device=logits.device, generator=gen)
        tokens, probs = ops.sample_head(logits, temps, seeds)
    else:
        tokens = (
            logits.max(dim=-1).indices  # first index on ties, like argmax; ~3x faster on the CPU
            if params.temperature == 0
            else gumbel_argmax(logits, params.temperature, gen)
        )
        probs = torch.softmax(logits, dim=-1).gather(1, tokens[:, None]).squeeze(1)
    if params.remasking == "random":
        confidence = torch.rand(tokens.shape, device=logits.device, generator=gen)
    else:
        confidence = probs.float()
    return tokens, confidence
