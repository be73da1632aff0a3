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
from engine.outputs import Commit, SchedulerOutput, StepOutput
from engine.sampler import sample_candidates
from engine.unmasking import POLICIES, may_commit_nothing
from models.forward_batch import PackedBatch, PagedKV
from models.registry import LoadedModel


@dataclass
class _Row:
    """One row of the forward batch: its query positions start..start+len(ids) of a canvas."""

    key: tuple[str, int]  # (request id, 0 conditional | 1 unconditional)
    ids: torch.Tensor  # [n] int64 ids of the query positions
    start: int  # canvas position of the first query
    logits_at: torch.Tensor  # [m] int64: the masked positions of the active block, relative to start
    pages: list[int] | None  # K/V pool pages (cached rows), None for uncached rows
    kv_len: int  # keys a cached row attends to: the whole canvas

    @property
    def end(self) -> int:
        return self.start + len(self.ids)

    @property
    def num_logits(self) -> int:
        return len(self.logits_at)


class ModelRunner:
    def __init__(self, loaded: LoadedModel, ops, kv_cache: KVCache | None = None):
        self.model = loaded.model
        self.kv_cache = kv_cache
        self.config = loaded.config
        self.device = loaded.device
        self.ops = ops
        self.stop_ids = torch.tensor(loaded.stop_token_ids, dtype=torch.int64, device=self.device)

    def init_request(self, request) -> None:
        """Give a request its own random stream on this device (seeded when it asked for one)."""
        seed = request.params.seed
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little") >> 1
        request.generator = torch.Generator(device=self.device).manual_seed(seed)

    def execute(self, sched: SchedulerOutput) -> StepOutput:
        positions = {r.request_id: r.masked_positions() for r in sched.forward + sched.reuse}
        logits, num_rows, num_tokens = self._forward(sched.forward, positions)
        commits = {}
        for req in sched.forward + sched.reuse:
            if req.request_id in logits:
                req_logits = logits[req.request_id]
                req.num_forward_passes += 1
                # A copy: a view would keep the whole batch's logits alive until the request moves on.
                keep = may_commit_nothing(req)
                req.reuse_logits = (req.canvas_version, req_logits.clone()) if keep else None
            else:
                req_logits = req.reuse_logits[1]
            commits[req.request_id] = self._choose(req, req_logits, positions[req.request_id])
        return StepOutput(commits=commits, num_rows=num_rows, num_tokens=num_tokens)

    @torch.inference_mode()
    def _forward(self, requests, positions) -> tuple[dict[str, torch.Tensor], int, int]:
        """One packed forward; returns request_id -> guided logits [m, V] fp32 of its masked positions."""
        if not requests:
            return {}, 0, 0
        rows = [row for req in requests for row in self._rows(req, positions[req.request_id])]
        rows.sort(key=lambda row: row.pages is not None)  # uncached rows first (forward_batch.py)
        batch, logits_index = self._pack(rows)
        flat = self.model(batch, self.ops, logits_index).float()
        row_logits, start = {}, 0
        for row in rows:
            row_logits[row.key] = flat[start : start + row.num_logits]
            start += row.num_logits
        out = {}
        for req in requests:
            cond = row_logits[(req.request_id, 0)]
            if req.params.cfg_scale > 0:
                un = row_logits[(req.request_id, 1)]
                cond = un + (req.params.cfg_scale + 1.0) * (cond - un)
            out[req.request_id] = cond
            req.kv_block = req.block  # a cached request's refresh (if this was one) is done
        return out, len(rows), int(batch.input_ids.numel())

    def _rows(self, req, masked: torch.Tensor) -> list[_Row]:
        """The request's rows this step: conditional, and unconditional (prompt masked) under CFG."""
        start, end = req.query_range()
        rows = []
        for r in range(req.params.num_rows):
            ids = req.canvas[start:end]
            if r == 1 and start < req.prompt_len:
                ids = ids.clone()
                ids[: req.prompt_len - start] = self.config.mask_token_id
            pages = req.kv_pages[r] if req.params.is_cached else None
            rows.append(_Row((req.request_id, r), ids, start, masked - start, pages, req.canvas_len))
        return rows

    def _pack(self, rows: list[_Row]) -> tuple[PackedBatch, torch.Tensor]:
        offsets = [0, *itertools.accumulate(len(row.ids) for row in rows)]
        positions = torch.cat([torch.arange(row.start, row.end) for row in rows])
        index = torch.cat([row.logits_at + off for row, off in zip(rows, offsets[:-1], strict=True)])
        kv = None
        first = next((i for i, row in enumerate(rows) if row.pages is not None), None)
        if first is not None:
            kv = self._paged(rows[first:], positions[offsets[first] :], first, offsets[first])
        batch = PackedBatch(
            torch.cat([row.ids for row in rows]).to(self.device),
            positions.to(self.device),
            torch.tensor(offsets, dtype=torch.int32).to(self.device),
            max_len=max(row.end for row in rows),
            kv=kv,
        )
        return batch, index.to(self.device)

    def _paged(self, rows: list[_Row], positions: torch.Tensor, first_row: int, first_token: int) -> PagedKV:
        """Page table, key counts and write slots of the cached rows (their queries' positions)."""
        size = self.kv_cache.page_size
        width = max(len(row.pages) for row in rows)
        table = torch.zeros((len(rows), width), dtype=torch.int32)
        for i, row in enumerate(rows):
            table[i, : len(row.pages)] = torch.tensor(row.pages, dtype=torch.int32)
        row_of = torch.repeat_interleave(torch.arange(len(rows)), torch.tensor([len(r.ids) for r in rows]))
        slots = table[row_of, positions // size].long() * size + positions % size
        lengths = torch.tensor([len(row.ids) for row in rows])
        cu = torch.zeros(len(rows) + 1, dtype=torch.int32)
        cu[1:] = lengths.cumsum(0)
        return PagedKV(
            k=self.kv_cache.k,
            v=self.kv_cache.v,
            page_size=size,
            first_row=first_row,
            first_token=first_token,
            cu_seqlens_q=cu.to(self.device),
            page_table=table.to(self.device),
            kv_lens=torch.tensor([row.kv_len for row in rows], dtype=torch.int32).to(self.device),
            write_slots=slots.to(self.device),
        )

    def _choose(self, req, logits: torch.Tensor, positions: torch.Tensor) -> Commit:
        params = req.params
        if params.logits_eos_inf:
            logits = logits.clone()
            logits[:, self.config.eos_token_id] = float("-inf")
        tokens, confidence = sample_candidates(logits, req, self.ops)
        if params.confidence_eos_eot_inf:
            confidence = confidence.masked_fill(torch.isin(tokens, self.stop_ids), float("-inf"))
        chosen = POLICIES[params.mode].select(confidence, req).cpu()
        return Commit(positions=positions[chosen], tokens=tokens.cpu()[chosen])
