"""After the forward: the guided logits of every committable position -> each request's commits.

One batch for the whole step, whatever mix of settings it holds: the EOS ban, candidates and
confidences (engine/sampler.py), the continuous sampler's reveals, and every unmasking policy
(engine/unmasking.py) run as tensor operations over all rows; the only transfer to the host is one
[B, W] matrix of committed tokens (-1: not committed) at the end. The per-request work left is plain
Python on the host: packing settings into two small tensors, and reading back the commits.

Rows: request b owns rows start_b .. start_b + m_b - 1 of the logits, one per masked position of its
active block (`Request.masked`, ascending); W = max m_b.
"""

from __future__ import annotations

import torch

from engine.outputs import Commit
from engine.sampler import STREAM_REVEAL, RowParams, row_uniform, sample_candidates
from engine.unmasking import MODES, PolicyStep, choose, reveal_probability
from kernels.counter_rng import mix64_int, row_keys


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor built this step, on `device`: through pinned memory without blocking on CUDA (the
    caching host allocator keeps the pinned block until the copy is done), as is elsewhere."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class PostForward:
    def __init__(self, ops, device: torch.device, eos_token_id: int, stop_token_ids: tuple[int, ...]):
        self.ops = ops
        self.device = device
        self.eos_token_id = eos_token_id
        self.stop_ids = torch.tensor(stop_token_ids, dtype=torch.int64, device=device)

    def commits(self, requests: list, guided: torch.Tensor) -> dict[str, Commit]:
        """requests: those taking the step, in row order; guided [M, V] fp32 (modified in place)."""
        counts = [len(r.masked) for r in requests]
        width = max(counts)
        ints, floats, modes = self._settings(requests, counts)
        max_commit = int(ints[3].max())  # a host tensor still: no sync
        ints, floats = to_device(ints, self.device), to_device(floats, self.device)
        counts_t, base_key, mode, num_commit, eos_ban, stop_ban, random_conf = ints
        temperature, threshold, factor, reveal_p = floats  # float64; fp32 where compared with fp32
        num_rows = guided.shape[0]
        req_of_row = torch.repeat_interleave(
            torch.arange(len(requests), device=self.device), counts_t, output_size=num_rows
        )
        starts = torch.cumsum(counts_t, 0) - counts_t
        within = torch.arange(num_rows, device=self.device) - starts[req_of_row]
        pad_index = req_of_row * width + within
        if any(r.params.temperature > 0 or r.params.remasking == "random" for r in requests) or (
            "continuous" in modes
        ):
            positions = torch.tensor([p for r in requests for p in r.masked], dtype=torch.int64)
            keys = row_keys(base_key[req_of_row], to_device(positions, self.device))
        else:  # nothing random this step: the keys would go unused
            keys = torch.zeros(num_rows, dtype=torch.int64, device=self.device)

        if any(r.params.logits_eos_inf for r in requests):
            guided[:, self.eos_token_id].masked_fill_(eos_ban[req_of_row].bool(), float("-inf"))
        rows = RowParams(
            keys=keys,
            temperature=temperature.float()[req_of_row],
            random_confidence=random_conf[req_of_row].bool(),
            ban_stop_confidence=stop_ban[req_of_row].bool(),
            any_random=any(r.params.remasking == "random" for r in requests),
        )
        tokens, confidence = sample_candidates(guided, rows, self.stop_ids, self.ops)

        shape = (len(requests), width)

        def pad(values: torch.Tensor, fill) -> torch.Tensor:  # [M] -> [B, W], `fill` where no row
            full = torch.full((shape[0] * shape[1],), fill, dtype=values.dtype, device=self.device)
            return full.index_copy(0, pad_index, values).view(shape)

        valid = torch.arange(width, device=self.device)[None, :] < counts_t[:, None]
        reveal = valid
        if "continuous" in modes:
            reveal = pad(row_uniform(keys, STREAM_REVEAL), 2.0) < reveal_p[:, None]
        step_in = PolicyStep(
            confidence=pad(confidence, float("-inf")),
            valid=valid,
            mode=mode,
            num_commit=num_commit,
            max_commit=max_commit,
            threshold=threshold.float(),
            factor=factor.float(),
            reveal=reveal,
        )
        chosen = choose(step_in, modes)
        committed = torch.where(chosen, pad(tokens, -1), -1).tolist()  # the step's one transfer
        out = {}
        for req, row, n in zip(requests, committed, counts, strict=True):
            picks = [j for j in range(n) if row[j] >= 0]
            out[req.request_id] = Commit([req.masked[j] for j in picks], [row[j] for j in picks])
        return out

    @staticmethod
    def _settings(requests: list, counts: list[int]) -> tuple[torch.Tensor, torch.Tensor, set[str]]:
        """Per-request settings as two host tensors ([7, B] int64, [4, B] float64) and the modes used."""
        ints, floats, modes = [], [], set()
        for req, n in zip(requests, counts, strict=True):
            p = req.params
            mode = p.mode
            modes.add(mode)
            ints.append(
                (
                    n,
                    mix64_int(mix64_int(req.seed) + req.num_steps),
                    MODES.index(mode),
                    min(req.num_to_commit(), n),
                    p.logits_eos_inf,
                    p.confidence_eos_eot_inf,
                    p.remasking == "random",
                )
            )
            reveal = reveal_probability(req) if mode == "continuous" else 0.0
            floats.append((p.temperature, p.threshold or 0.0, p.factor or 0.0, reveal))
        ints_t = torch.tensor(ints, dtype=torch.int64).T
        floats_t = torch.tensor(floats, dtype=torch.float64).T
        return ints_t, floats_t, modes
