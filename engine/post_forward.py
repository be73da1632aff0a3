"""After the forward: the guided logits of every committable position -> each request's commits.

One batch for the whole step, whatever mix of settings it holds: the EOS ban, top_k / top_p / min_p,
candidates and confidences (engine/sampler.py), the continuous sampler's reveals, and every unmasking
policy (engine/unmasking.py) run as tensor operations over all rows; the transfer to the host is one
[B, W] matrix of committed tokens (-1: not committed) at the end, plus the log-probabilities when a
request asked for them. The per-request work left is plain Python on the host: packing settings into
two small tensors, and reading back the commits.

Rows: request b owns rows start_b .. start_b + m_b - 1 of the logits, one per masked position of its
active block (`Request.masked`, ascending); W = max m_b.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.outputs import Commit
from engine.sampler import STREAM_REVEAL, RowParams, filter_logits, row_uniform, sample_candidates
from engine.unmasking import MODES, PolicyStep, choose, reveal_probability
from kernels.counter_rng import mix64_int, row_keys


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor built this step, on `device`: through pinned memory without blocking on CUDA (the
    caching host allocator keeps the pinned block until the copy is done), as is elsewhere."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


@dataclass
class _Step:
    """Where each row sits, and every request's settings, on the device."""

    counts: list[int]  # masked positions per request
    width: int  # W
    modes: set[str]  # unmasking policies used this step
    used: set[str]  # settings some request uses (PostForward._settings), read once per step
    max_top_k: int  # the largest top_k asked for (0: none)
    max_commit: int
    req_of_row: torch.Tensor  # [M] int64
    pad_index: torch.Tensor  # [M] int64: row -> b * W + j
    ints: torch.Tensor  # [8, B] int64, see PostForward._settings
    floats: torch.Tensor  # [6, B] float64

    def pad(self, values: torch.Tensor, fill) -> torch.Tensor:
        """[M] -> [B, W], `fill` where no row."""
        full = torch.full((len(self.counts) * self.width,), fill, dtype=values.dtype, device=values.device)
        return full.index_copy(0, self.pad_index, values).view(len(self.counts), self.width)


class PostForward:
    def __init__(self, ops, device: torch.device, eos_token_id: int, stop_token_ids: tuple[int, ...]):
        self.ops = ops
        self.device = device
        self.eos_token_id = eos_token_id
        self.stop_ids = torch.tensor(stop_token_ids, dtype=torch.int64, device=device)

    def commits(self, requests: list, guided: torch.Tensor) -> dict[str, Commit]:
        """requests: those taking the step, in row order; guided [M, V] fp32 (modified in place)."""
        step = self._step(requests, guided.shape[0])
        tokens, confidence, keys = self._candidates(requests, guided, step)
        counts_t, mode, num_commit = step.ints[0], step.ints[2], step.ints[3]
        threshold, factor, reveal_p = step.floats[1], step.floats[2], step.floats[3]
        valid = torch.arange(step.width, device=self.device)[None, :] < counts_t[:, None]
        reveal = valid
        if "continuous" in step.modes:
            reveal = step.pad(row_uniform(keys, STREAM_REVEAL), 2.0) < reveal_p[:, None]
        # A valid position at -inf (an EOS/EoT candidate under confidence_eos_eot_inf) must still rank
        # above padding, or top-k could pick padding and commit fewer tokens than the schedule says.
        lowest = torch.finfo(confidence.dtype).min
        policy_step = PolicyStep(
            confidence=step.pad(confidence.nan_to_num(neginf=lowest), float("-inf")),
            valid=valid,
            mode=mode,
            num_commit=num_commit,
            max_commit=step.max_commit,
            threshold=threshold.float(),
            factor=factor.float(),
            reveal=reveal,
        )
        chosen = choose(policy_step, step.modes)
        committed = torch.where(chosen, step.pad(tokens, -1), -1).tolist()  # the step's one transfer
        logprobs = self._logprobs(requests, guided, tokens, step)
        out = {}
        for b, (req, row, n) in enumerate(zip(requests, committed, step.counts, strict=True)):
            picks = [j for j in range(n) if row[j] >= 0]
            lps = None if logprobs is None or logprobs[b] is None else [logprobs[b][j] for j in picks]
            out[req.request_id] = Commit([req.masked[j] for j in picks], [row[j] for j in picks], lps)
        return out

    def _step(self, requests: list, num_rows: int) -> _Step:
        counts = [len(r.masked) for r in requests]
        ints, floats, modes, used = self._settings(requests, counts)
        max_commit = int(ints[3].max())  # host tensors still: no sync
        max_top_k = int(ints[7].max())
        ints, floats = to_device(ints, self.device), to_device(floats, self.device)
        counts_t = ints[0]
        req_of_row = torch.repeat_interleave(
            torch.arange(len(requests), device=self.device), counts_t, output_size=num_rows
        )
        starts = torch.cumsum(counts_t, 0) - counts_t
        within = torch.arange(num_rows, device=self.device) - starts[req_of_row]
        width = max(counts)
        pad_index = req_of_row * width + within
        return _Step(counts, width, modes, used, max_top_k, max_commit, req_of_row, pad_index, ints, floats)

    def _candidates(self, requests: list, guided: torch.Tensor, step: _Step):
        """(tokens, confidence, random keys) [M] of every row."""
        r, used = step.req_of_row, step.used
        base_key, eos_ban, stop_ban, random_conf, top_k = (step.ints[i] for i in (1, 4, 5, 6, 7))
        temperature, top_p, min_p = (step.floats[i] for i in (0, 4, 5))
        if used & {"sampled", "random"} or "continuous" in step.modes:
            positions = torch.tensor([p for q in requests for p in q.masked], dtype=torch.int64)
            keys = row_keys(base_key[r], to_device(positions, self.device))
        else:  # nothing random this step: the keys would go unused
            keys = torch.zeros(len(r), dtype=torch.int64, device=self.device)
        if "logits_eos_inf" in used:
            guided[:, self.eos_token_id].masked_fill_(eos_ban[r].bool(), float("-inf"))
        rows = RowParams(
            keys=keys,
            temperature=temperature.float()[r],
            random_confidence=random_conf[r].bool(),
            ban_stop_confidence=stop_ban[r].bool(),
            any_random="random" in used,
        )
        narrowed = None
        if "filters" in used:
            # Rows of other requests pass unchanged (k = all, p = 1, min_p = 0).
            narrowed = filter_logits(
                guided,
                rows.temperature,
                top_k[r] if "top_k" in used else None,
                top_p[r] if "top_p" in used else None,
                min_p[r] if "min_p" in used else None,
                max_k=step.max_top_k,
            )
        return (*sample_candidates(guided, rows, self.stop_ids, self.ops, narrowed), keys)

    def _logprobs(self, requests: list, guided: torch.Tensor, tokens: torch.Tensor, step: _Step):
        """Per request asking for them: per masked position j, (logprob of the candidate, [(token,
        logprob)] of the best `logprobs` tokens), all under the guided, un-tempered logits; else None."""
        asked = [q.params.logprobs for q in requests]
        if all(n is None for n in asked):
            return None
        top_n = max(n or 0 for n in asked)
        log_probs = torch.log_softmax(guided, dim=-1)  # fp32; one source for chosen and alternatives
        chosen_lp = log_probs.gather(1, tokens[:, None]).squeeze(1).tolist()
        top_values = top_ids = None
        if top_n:
            top = torch.topk(log_probs, top_n, dim=-1)
            top_values, top_ids = top.values.tolist(), top.indices.tolist()
        out, start = [], 0
        for n, m in zip(asked, step.counts, strict=True):
            rows = range(start, start + m)
            start += m
            if n is None:
                out.append(None)
                continue
            alts = [list(zip(top_ids[i][:n], top_values[i][:n], strict=True)) if n else [] for i in rows]
            out.append([(chosen_lp[i], alts[k]) for k, i in enumerate(rows)])
        return out

    @staticmethod
    def _settings(requests: list, counts: list[int]):
        """Per-request settings as host tensors, the modes used and the settings used (one pass over
        the requests). ints [8, B]: masked count, random key of (seed, step), mode id, schedule
        commits now, logits_eos_inf, confidence_eos_eot_inf, random remasking, top_k (0: off); floats
        [6, B]: temperature, threshold, factor, reveal probability, top_p (1: off), min_p (0: off).
        used: "sampled" (temperature > 0), "random", "logits_eos_inf", "filters" (top_k/top_p/min_p
        narrow a sampled row), and "top_k", "top_p", "min_p" (set on some request)."""
        ints, floats, modes, used = [], [], set(), set()
        for req, n in zip(requests, counts, strict=True):
            p = req.params
            mode = p.mode
            modes.add(mode)
            flags = (
                ("sampled", p.temperature > 0),
                ("random", p.remasking == "random"),
                ("logits_eos_inf", p.logits_eos_inf),
                ("filters", p.filters_tokens),
                ("top_k", p.top_k is not None),
                ("top_p", p.top_p is not None),
                ("min_p", p.min_p is not None),
            )
            used.update(name for name, on in flags if on)
            ints.append(
                (
                    n,
                    mix64_int(mix64_int(req.seed) + req.num_steps),
                    MODES.index(mode),
                    n if req.step_in_block >= req.block_steps - 1 else min(req.num_to_commit(), n),
                    p.logits_eos_inf,
                    p.confidence_eos_eot_inf,
                    p.remasking == "random",
                    0 if p.top_k in (None, -1) else p.top_k,
                )
            )
            reveal = reveal_probability(req) if mode == "continuous" else 0.0
            floats.append(
                (
                    p.temperature,
                    p.threshold or 0.0,
                    p.factor or 0.0,
                    reveal,
                    1.0 if p.top_p is None else p.top_p,
                    p.min_p or 0.0,
                )
            )
        ints_t = torch.tensor(ints, dtype=torch.int64).T
        floats_t = torch.tensor(floats, dtype=torch.float64).T
        return ints_t, floats_t, modes, used
