"""ModelRunner: turns a SchedulerOutput into one packed forward and the commits of every request.

Rows: one conditional row per forwarded request, plus, with CFG, an unconditional row (the same
canvas with every prompt position replaced by the mask id, and a K/V cache of its own). A row
queries the whole canvas (exact mode, or a cached request entering a block: the refresh that fills
its cache), or, with Fast-dLLM's approximate caches, the active block and everything after it
(prefix) or the active block alone (dual), the other keys coming from the cache (see
`Request.query_range` and models/forward_batch.py). Only the masked positions of each active block
reach the LM head. Requests whose canvas did not change since their last forward
take no row and reuse that forward's logits (exact: the network has no time input).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

import torch

from engine.kv_cache import KVCache
from engine.outputs import SchedulerOutput, StepOutput
from engine.post_forward import PostForward, to_device
from engine.unmasking import may_commit_nothing
from models.forward_batch import PackedBatch, PagedKV
from models.registry import LoadedModel


@dataclass
class _Row:
    """One row of the forward batch: its query positions start..start+len(ids) of a canvas."""

    key: tuple[str, int]  # (request id, 0 conditional | 1 unconditional)
    ids: list[int]  # ids of the query positions
    start: int  # canvas position of the first query
    masked: list[int]  # the masked positions of the active block (absolute): their logits are needed
    pages: list[int] | None  # K/V pool pages (cached rows), None for uncached rows
    kv_len: int  # keys a cached row attends to: the whole canvas

    @property
    def end(self) -> int:
        return self.start + len(self.ids)


class ModelRunner:
    def __init__(self, loaded: LoadedModel, ops, kv_cache: KVCache | None = None):
        self.model = loaded.model
        self.kv_cache = kv_cache
        self.spec = loaded.spec
        self.device = loaded.device
        self.ops = ops
        # Rotary tables once, for the longest canvas the engine admits (no regrowth inside a step).
        self.model.rope_tables(self.spec.max_sequence_length, self.device)
        self.post_forward = PostForward(ops, self.device, self.spec.eos_token_id, self.spec.stop_token_ids)
        # Shifted-logits families (Dream) read position p's logits from the output at p - 1.
        self.shift = 1 if self.spec.shift_logits else 0

    def init_request(self, request) -> None:
        """Fix the seed that keys the request's random draws (its own, or a random one)."""
        seed = request.params.seed
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little") >> 1
        request.seed = seed

    @torch.inference_mode()  # the post-forward edits the forward's logits in place (EOS ban)
    def execute(self, sched: SchedulerOutput) -> StepOutput:
        requests = sched.forward + sched.reuse
        guided, num_rows, num_tokens = self._forward(sched.forward)
        parts, start = [guided], 0
        for req in sched.forward:
            req.num_forward_passes += 1
            end = start + len(req.masked)
            # A copy: a view would keep the whole batch's logits alive until the request moves on.
            # (exact only for a network without a time input)
            keep = may_commit_nothing(req) and not self.spec.time_conditioned
            req.reuse_logits = (req.canvas_version, guided[start:end].clone()) if keep else None
            start = end
        parts += [req.reuse_logits[1] for req in sched.reuse]
        logits = torch.cat(parts) if sched.reuse else guided
        commits = self.post_forward.commits(requests, logits)
        return StepOutput(commits=commits, num_rows=num_rows, num_tokens=num_tokens)

    def _forward(self, requests) -> tuple[torch.Tensor, int, int]:
        """One packed forward; returns the guided logits [M, V] fp32 of the forwarded requests' masked
        positions, request after request (empty when nothing is forwarded)."""
        if not requests:
            return torch.empty((0, self.spec.vocab_size), device=self.device), 0, 0
        rows = [row for req in requests for row in self._rows(req)]
        rows.sort(key=lambda row: row.pages is not None)  # uncached rows first (forward_batch.py)
        batch, logits_index = self._pack(rows)
        flat = self.model(batch, self.ops, logits_index).float()
        first = {}  # row key -> its first logits row in `flat`
        start = 0
        for row in rows:
            first[row.key] = start
            start += len(row.masked)
        cond, uncond, weights, cfg_at = [], [], [], []
        for req in requests:
            m = len(req.masked)
            rows_of = range(first[(req.request_id, 0)], first[(req.request_id, 0)] + m)
            if req.params.cfg_scale > 0:
                cfg_at.extend(range(len(cond), len(cond) + m))
                uncond.extend(range(first[(req.request_id, 1)], first[(req.request_id, 1)] + m))
                weights.extend([req.params.cfg_scale + 1.0] * m)
            cond.extend(rows_of)
            req.kv_block = req.block  # a cached request's refresh (if this was one) is done
        guided = flat.index_select(0, to_device(torch.tensor(cond), self.device))
        if cfg_at:
            at = to_device(torch.tensor(cfg_at), self.device)
            un = flat.index_select(0, to_device(torch.tensor(uncond), self.device))
            w = to_device(torch.tensor(weights, dtype=guided.dtype), self.device)[:, None]
            guided.index_copy_(0, at, un + w * (guided.index_select(0, at) - un))
        return guided, len(rows), int(batch.input_ids.numel())

    def _rows(self, req) -> list[_Row]:
        """The request's rows this step: conditional, and unconditional (prompt masked) under CFG."""
        start, end = req.query_range()
        start = max(start - self.shift, 0)  # a cached step also queries the position before its block
        ids = req.canvas[start:end]
        pages = req.kv_pages if req.params.is_cached else [None, None]
        rows = [_Row((req.request_id, 0), ids, start, req.masked, pages[0], req.canvas_len)]
        if req.params.cfg_scale > 0:
            if start < req.prompt_len:
                ids = [self.spec.mask_token_id] * (req.prompt_len - start) + req.canvas[
                    req.prompt_len : end
                ]
            rows.append(_Row((req.request_id, 1), ids, start, req.masked, pages[1], req.canvas_len))
        return rows

    def _pack(self, rows: list[_Row]) -> tuple[PackedBatch, torch.Tensor]:
        """Every per-row list joined on the host, so the batch costs a few tensors, not a few per row."""
        ids, index, starts, lengths = [], [], [], []
        for row in rows:
            delta = len(ids) - row.start - self.shift
            index.extend([p + delta for p in row.masked])
            ids.extend(row.ids)
            starts.append(row.start)
            lengths.append(len(row.ids))
        offsets = [0, *itertools.accumulate(lengths)]
        n = len(ids)
        # positions: start_r + (i - offset_r) for token i of row r
        shift = torch.tensor(starts, dtype=torch.int64) - torch.tensor(offsets[:-1], dtype=torch.int64)
        lengths_t = torch.tensor(lengths, dtype=torch.int64)
        positions = torch.arange(n) + torch.repeat_interleave(shift, lengths_t, output_size=n)
        kv = None
        first = next((i for i, row in enumerate(rows) if row.pages is not None), None)
        if first is not None:
            kv = self._paged(
                rows[first:], positions[offsets[first] :], lengths_t[first:], first, offsets[first]
            )
        batch = PackedBatch(
            to_device(torch.tensor(ids, dtype=torch.int64), self.device),
            to_device(positions, self.device),
            to_device(torch.tensor(offsets, dtype=torch.int32), self.device),
            max_len=max(row.end for row in rows),
            kv=kv,
        )
        return batch, to_device(torch.tensor(index, dtype=torch.int64), self.device)

    def _paged(
        self,
        rows: list[_Row],
        positions: torch.Tensor,
        lengths: torch.Tensor,
        first_row: int,
        first_token: int,
    ) -> PagedKV:
        """Page table, key counts and write slots of the cached rows (their queries' positions)."""
        size = self.kv_cache.page_size
        width = max(len(row.pages) for row in rows)
        table = torch.tensor([row.pages + [0] * (width - len(row.pages)) for row in rows], dtype=torch.int32)
        row_of = torch.repeat_interleave(torch.arange(len(rows)), lengths, output_size=len(positions))
        slots = table[row_of, positions // size].long() * size + positions % size
        cu = torch.zeros(len(rows) + 1, dtype=torch.int32)
        cu[1:] = lengths.cumsum(0)
        return PagedKV(
            k=self.kv_cache.k,
            v=self.kv_cache.v,
            page_size=size,
            first_row=first_row,
            first_token=first_token,
            cu_seqlens_q=to_device(cu, self.device),
            page_table=to_device(table, self.device),
            kv_lens=to_device(torch.tensor([row.kv_len for row in rows], dtype=torch.int32), self.device),
            write_slots=to_device(slots, self.device),
        )
