"""After the forward: the guided logits of every committable position -> each request's commits.

One batch for the whole step, whatever mix of settings it holds: the EOS ban, top_k / top_p / min_p,
candidates and confidences (engine/sampler.py; Dream's entropy / margin only on the rows of the
requests that ask for them), the continuous sampler's reveals, and every unmasking
policy (engine/unmasking.py) run as tensor operations over all rows; the transfer to the host is one
[B, W] matrix of committed tokens (-1: not committed) at the end, plus the log-probabilities when a
request asked for them. A batch of LLaDA's default request alone (fixed schedule, temperature 0,
low_confidence, nothing else) takes a shorter path to the same commits (`_plain_commits`).

Rows: request b owns rows start_b .. start_b + m_b - 1 of the logits, one per masked position of its
active block (`Request.masked`, ascending); W = max m_b.

What a step needs changes at two rates, and is built at that rate:
- `BatchSettings`, per membership: every request's settings as device tensors [B], and which modes and
  settings the batch uses, from the runner-owned `RequestTable` (engine/request_table.py), where each
  request's settings are written once; kept across steps while the requests stay the same.
- `_Step`, per step: masked counts, the schedule's commit counts, the random keys of (seed, step),
  the continuous sampler's reveal probabilities: one small host tensor, and the row -> request maps.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from engine.outputs import Commit
from engine.request_table import BatchSettings, RequestTable
from engine.sampler import STREAM_REVEAL, RowParams, filter_logits, row_uniform, sample_candidates
from engine.transfer import HostBuffer, int_tensor, to_device
from engine.unmasking import PolicyStep, choose, reveal_probability
from kernels.counter_rng import mix64_int, row_keys


@dataclass
class _Step:
    """Where each row sits, and the settings that change every step."""

    counts: list[int]  # masked positions per request
    width: int  # W
    num_rows: int  # M
    num_masked: torch.Tensor  # [B] int64: m_b
    pad_index: torch.Tensor | None  # [M] int64: row -> b * W + j; None when every m_b = W
    valid: torch.Tensor  # [B, W] bool: j < m_b
    max_commit: int = 0  # the largest schedule commit count (0 without schedule requests)
    num_commit: torch.Tensor | None = None  # [B] int64: schedule commits now
    keys: torch.Tensor | None = None  # [B] int64: random key of (seed, step); None when nothing is random
    reveal: torch.Tensor | None = None  # [B] float64: continuous reveal probability; None without those

    @classmethod
    def padding(
        cls, counts: list[int], num_rows: int, device: torch.device, num_masked: torch.Tensor | None = None
    ) -> _Step:
        """The row layout of requests with `counts` masked positions (num_masked: counts on the
        device, if already there)."""
        if num_masked is None:
            num_masked = to_device(int_tensor(counts), device)
        width = max(counts)
        if min(counts) == width:  # no padding: [M] is [B, W] already
            pad_index = None
            valid = torch.ones((len(counts), width), dtype=torch.bool, device=device)
        else:  # row i (request b's rows start at start_b) -> b * W + i - start_b
            starts = num_masked.cumsum(0) - num_masked
            shift = torch.arange(len(counts), device=device) * width - starts
            rows_at = torch.arange(num_rows, device=device)
            pad_index = rows_at + torch.repeat_interleave(shift, num_masked, output_size=num_rows)
            valid = torch.arange(width, device=device)[None, :] < num_masked[:, None]
        return cls(counts, width, num_rows, num_masked, pad_index, valid)

    def per_row(self, values: torch.Tensor) -> torch.Tensor:
        """[B] -> [M]: each request's value on each of its rows."""
        return torch.repeat_interleave(values, self.num_masked, output_size=self.num_rows)

    def rows_of(self, chosen: list[bool]) -> torch.Tensor:
        """The rows [M'] int64 (host) of the requests with chosen[b] set, in order."""
        starts = itertools.accumulate(self.counts, initial=0)
        spans = (range(s, s + m) for s, m, c in zip(starts, self.counts, chosen, strict=False) if c)
        return int_tensor(itertools.chain.from_iterable(spans))

    def pad(self, values: torch.Tensor, fill) -> torch.Tensor:
        """[M] -> [B, W], `fill` where no row."""
        if self.pad_index is None:
            return values.view(len(self.counts), self.width)
        full = torch.full((len(self.counts) * self.width,), fill, dtype=values.dtype, device=values.device)
        return full.index_copy(0, self.pad_index, values).view(len(self.counts), self.width)


class PostForward:
    def __init__(self, ops, device: torch.device, eos_token_id: int, stop_token_ids: tuple[int, ...]):
        self.ops = ops
        self.device = device
        self.eos_token_id = eos_token_id
        self.stop_ids = torch.tensor(stop_token_ids, dtype=torch.int64, device=device)
        self.table = RequestTable(device)  # the running requests' settings, kept across steps
        self.host = HostBuffer()  # the commits' way back

    def commits(self, requests: list, guided: torch.Tensor) -> dict[str, Commit]:
        """requests: those taking the step, in row order; guided [M, V] fp32 (modified in place)."""
        settings = self.table.settings(requests)
        if settings.plain:
            return self._plain_commits(requests, guided)
        return self._general_commits(requests, guided, settings)

    def _general_commits(self, requests: list, guided: torch.Tensor, settings: BatchSettings):
        """Any mix of settings."""
        step = self._step(requests, settings, guided.shape[0])
        tokens, confidence, keys = self._candidates(requests, guided, settings, step)
        reveal = step.valid
        if "continuous" in settings.modes:
            reveal = step.pad(row_uniform(keys, STREAM_REVEAL), 2.0) < step.reveal[:, None]
        # A valid position at -inf (an EOS/EoT candidate under confidence_eos_eot_inf) must still rank
        # above padding, or top-k could pick padding and commit fewer tokens than the schedule says.
        lowest = torch.finfo(confidence.dtype).min
        policy_step = PolicyStep(
            confidence=step.pad(confidence.nan_to_num(neginf=lowest), float("-inf")),
            valid=step.valid,
            mode=settings.mode,
            num_commit=step.num_commit,
            max_commit=step.max_commit,
            threshold=settings.threshold,
            factor=settings.factor,
            reveal=reveal,
        )
        chosen = choose(policy_step, settings.modes)
        committed = self.host.fetch(torch.where(chosen, step.pad(tokens, -1), -1))  # the step's one transfer
        logprobs = self._logprobs(requests, settings, guided, tokens, step)
        return _read_commits(requests, committed, logprobs)

    def _plain_commits(self, requests: list, guided: torch.Tensor) -> dict[str, Commit]:
        """The batch of LLaDA's default request alone (fixed schedule, temperature 0, low_confidence,
        no bans, filters or logprobs): the general path's commits in a handful of ops. Every row's
        confidence is its largest probability (the argmax's); top-k of the same confidence matrix
        picks the same positions; the argmax is then taken only on the picked rows. One transfer:
        the picked [B, k] (positions, tokens), read back in ascending position order."""
        counts = [len(r.masked) for r in requests]
        num_commit = [r.scheduled_commits() for r in requests]
        out = {r.request_id: Commit([], [], None) for r in requests}
        top_k = max(num_commit)
        if top_k == 0:
            return out
        confidence = self.ops.max_probability(guided).nan_to_num(nan=0.0)  # as the general path
        batch, width = len(counts), max(counts)
        if min(counts) == width:
            top = torch.topk(confidence.view(batch, width), top_k, dim=1).indices
            rows = top + torch.arange(0, batch * width, width, device=self.device)[:, None]
        else:
            step = _Step.padding(counts, guided.shape[0], self.device)
            top = torch.topk(step.pad(confidence, float("-inf")), top_k, dim=1).indices
            # Past a request's commit count top-k may name padding: clamp it inside the request's rows
            # (those entries are not read back).
            last = step.num_masked[:, None] - 1
            rows = torch.minimum(top, last) + (step.num_masked.cumsum(0)[:, None] - 1 - last)
        tokens = guided.index_select(0, rows.flatten()).max(dim=-1).indices.view(batch, top_k)
        picked = self.host.fetch(torch.stack([top, tokens])).tolist()  # the step's one transfer
        for req, k, where, toks in zip(requests, num_commit, picked[0], picked[1], strict=True):
            commit = out[req.request_id]
            for j, token in sorted(zip(where[:k], toks[:k], strict=True)):
                commit.positions.append(req.masked[j])
                commit.tokens.append(token)
        return out

    def _step(self, requests: list, settings: BatchSettings, num_rows: int) -> _Step:
        counts = [len(r.masked) for r in requests]
        rows = [counts]
        if "schedule" in settings.modes:
            rows.append([r.scheduled_commits() for r in requests])
        is_random = bool(settings.used & {"sampled", "random"}) or "continuous" in settings.modes
        if is_random:
            seeds = zip(settings.seed_keys, requests, strict=True)
            rows.append([mix64_int(key + r.num_steps) for key, r in seeds])
        columns = to_device(torch.tensor(rows, dtype=torch.int64), self.device).unbind(0)
        reveal = None
        if "continuous" in settings.modes:
            probs = [reveal_probability(r) if r.params.mode == "continuous" else 0.0 for r in requests]
            reveal = to_device(torch.tensor(probs, dtype=torch.float64), self.device)
        step = _Step.padding(counts, num_rows, self.device, num_masked=columns[0])
        scheduled = "schedule" in settings.modes
        step.max_commit = max(rows[1]) if scheduled else 0
        step.num_commit = columns[1] if scheduled else step.num_masked  # read by the schedule policy only
        step.keys = columns[-1] if is_random else None
        step.reveal = reveal
        return step

    def _candidates(self, requests: list, guided: torch.Tensor, settings: BatchSettings, step: _Step):
        """(tokens, confidence, random keys) [M] of every row."""
        per_row, used = step.per_row, settings.used
        if step.keys is not None:
            positions = int_tensor(itertools.chain.from_iterable(q.masked for q in requests))
            keys = row_keys(per_row(step.keys), to_device(positions, self.device))
        else:  # nothing random this step: the keys would go unused
            keys = torch.zeros(step.num_rows, dtype=torch.int64, device=self.device)
        if "logits_eos_inf" in used:
            guided[:, self.eos_token_id].masked_fill_(per_row(settings.eos_ban), float("-inf"))
        rows = RowParams(
            keys=keys,
            temperature=per_row(settings.temperature),
            random_confidence=per_row(settings.random_confidence) if "random" in used else None,
            ban_stop_confidence=per_row(settings.stop_ban) if "confidence_eos_eot_inf" in used else None,
        )
        for measure in sorted(used & {"entropy", "margin"}):  # Dream's confidences, on their rows only
            chosen = [q.params.remasking == measure for q in requests]
            rows.measured[measure] = to_device(step.rows_of(chosen), self.device)
        narrowed = None
        if "filters" in used:
            # Rows of other requests pass unchanged (k = all, p = 1, min_p = 0).
            narrowed = filter_logits(
                guided,
                rows.temperature,
                per_row(settings.top_k) if "top_k" in used else None,
                per_row(settings.top_p) if "top_p" in used else None,
                per_row(settings.min_p) if "min_p" in used else None,
                max_k=settings.max_top_k,
            )
        return (*sample_candidates(guided, rows, self.stop_ids, self.ops, narrowed), keys)

    def _logprobs(self, requests: list, settings: BatchSettings, guided, tokens: torch.Tensor, step: _Step):
        """Per request asking for them: per masked position j, (logprob of the candidate, [(token,
        logprob)] of the best `logprobs` tokens), all under the guided, un-tempered logits; else None."""
        if "logprobs" not in settings.used:
            return None
        asked = [q.params.logprobs for q in requests]
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


def _read_commits(requests: list, committed: torch.Tensor, logprobs: list | None) -> dict[str, Commit]:
    """committed [B, W] host tensor (token, or -1) -> each request's Commit. Python visits only the
    committed entries (a few per request), not every masked position."""
    out = {}
    for b, req in enumerate(requests):
        lps = None if logprobs is None or logprobs[b] is None else []
        out[req.request_id] = Commit([], [], lps)
    is_committed = committed >= 0
    where = is_committed.nonzero().tolist()  # [[b, j], ...], row-major like the tokens below
    for (b, j), token in zip(where, committed[is_committed].tolist(), strict=True):
        req = requests[b]
        commit = out[req.request_id]
        commit.positions.append(req.masked[j])
        commit.tokens.append(token)
        if commit.logprobs is not None:
            commit.logprobs.append(logprobs[b][j])
    return out
