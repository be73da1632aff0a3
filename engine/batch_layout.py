"""Where the rows of a forward sit in the packed batch; kept across steps, rebuilt when the rows change.

A forwarded request contributes a conditional row and, with CFG, an unconditional one (its canvas
with every prompt position replaced by the mask id); each row queries canvas positions start .. end - 1
(`Request.query_range`, one position earlier for shifted-logits families). Uncached rows come first
in the packed batch (models/forward_batch.py). Requests are ordered with the CFG ones first, so the
conditional logits of the guided rows are one leading slice of the step's logits.

A `Layout` depends on which requests forward, in which order, and on their query ranges; not on the
canvas contents nor on which positions are still masked. So it is reused from step to step until a
request joins or leaves, moves between forward and reuse, or a cached request enters a block (its
query range switches between the full-canvas refresh and the block). What does change every step
is read from the requests by `ids` and `logits_index`, as host lists turned into one tensor each.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from engine.transfer import to_device
from models.forward_batch import PagedKV


@dataclass
class _Row:
    """One row of the forward batch: canvas positions start .. end - 1 of `req`."""

    req: object  # Request
    is_uncond: bool  # the CFG row: prompt positions masked
    start: int
    end: int
    pages: list[int] | None  # K/V pool pages (cached rows), None for uncached rows


@dataclass
class Layout:
    requests: tuple  # the forwarded requests as scheduled: the cache key, with `ranges`
    ranges: list  # (request, query range) of each cached request
    ordered: list  # the forwarded requests, CFG ones first: the order of their logits rows
    num_cfg: int  # requests with CFG (the first ones of `ordered`)
    rows: list[_Row]  # in packed order
    positions: torch.Tensor  # [N] int64 on the device
    cu_seqlens: torch.Tensor  # [R + 1] int32 on the device
    max_len: int
    kv: PagedKV | None
    cond_delta: list[int]  # per ordered request: a masked position p's row in the packed batch is p + delta
    uncond_delta: list[int]  # the same for the unconditional rows of the CFG requests
    cfg_weights: list[float]  # per CFG request: cfg_scale + 1

    def is_current(self, requests: list) -> bool:
        """Whether the layout still describes the forward of `requests`."""
        return self.requests == tuple(requests) and all(r.query_range() == q for r, q in self.ranges)

    def ids(self, mask_id: int) -> list[int]:
        """The packed input ids of this step, from the requests' canvases."""
        ids = []
        for row in self.rows:
            canvas = row.req.canvas
            prompt_len = row.req.prompt_len
            if row.is_uncond and row.start < prompt_len:
                ids.extend(itertools.repeat(mask_id, prompt_len - row.start))
                ids.extend(canvas[prompt_len : row.end])
            else:
                ids.extend(canvas[row.start : row.end])
        return ids

    def logits_index(self) -> tuple[list[int], int]:
        """Packed rows whose logits the step needs: the masked positions of every ordered request's
        active block, then those of the CFG requests' unconditional rows; and how many of the first
        are guided (the CFG requests' conditional rows)."""
        index, num_guided = [], 0
        for i, (req, delta) in enumerate(zip(self.ordered, self.cond_delta, strict=True)):
            index.extend([p + delta for p in req.masked])
            if i < self.num_cfg:
                num_guided += len(req.masked)
        for req, delta in zip(self.ordered[: self.num_cfg], self.uncond_delta, strict=True):
            index.extend([p + delta for p in req.masked])
        return index, num_guided

    def guidance_weights(self) -> list[float]:
        """cfg_scale + 1 for each guided row."""
        weights = []
        for req, w in zip(self.ordered[: self.num_cfg], self.cfg_weights, strict=True):
            weights.extend(itertools.repeat(w, len(req.masked)))
        return weights


def build_layout(requests: list, shift: int, kv_cache, device: torch.device) -> Layout:
    """The layout of `requests` (those taking a forward, in the scheduler's order)."""
    ordered = sorted(requests, key=lambda r: r.params.cfg_scale == 0)  # stable: CFG first
    num_cfg = sum(r.params.cfg_scale > 0 for r in ordered)
    rows = []
    for req in ordered:
        start, end = req.query_range()
        start = max(start - shift, 0)  # a cached step also queries the position before its block
        pages = req.kv_pages if req.params.is_cached else [None, None]
        rows.append(_Row(req, False, start, end, pages[0]))
        if req.params.cfg_scale > 0:
            rows.append(_Row(req, True, start, end, pages[1]))
    rows.sort(key=lambda row: row.pages is not None)  # uncached rows first (forward_batch.py)
    lengths = [row.end - row.start for row in rows]
    offsets = [0, *itertools.accumulate(lengths)]
    row_offsets = list(zip(rows, offsets[:-1], strict=True))
    delta = {(id(row.req), row.is_uncond): off - row.start - shift for row, off in row_offsets}
    # positions: start_r + (i - offset_r) for token i of row r
    n = offsets[-1]
    lengths_t = torch.tensor(lengths, dtype=torch.int64)
    row_shift = torch.tensor([row.start - off for row, off in row_offsets], dtype=torch.int64)
    positions = torch.arange(n) + torch.repeat_interleave(row_shift, lengths_t, output_size=n)
    kv = None
    first = next((i for i, row in enumerate(rows) if row.pages is not None), None)
    if first is not None:
        paged = (rows[first:], positions[offsets[first] :], lengths_t[first:])
        kv = _paged(*paged, first, offsets[first], kv_cache, device)
    return Layout(
        requests=tuple(requests),
        ranges=[(r, r.query_range()) for r in requests if r.params.is_cached],
        ordered=ordered,
        num_cfg=num_cfg,
        rows=rows,
        positions=to_device(positions, device),
        cu_seqlens=to_device(torch.tensor(offsets, dtype=torch.int32), device),
        max_len=max(row.end for row in rows),
        kv=kv,
        cond_delta=[delta[(id(r), False)] for r in ordered],
        uncond_delta=[delta[(id(r), True)] for r in ordered[:num_cfg]],
        cfg_weights=[r.params.cfg_scale + 1.0 for r in ordered[:num_cfg]],
    )


def _paged(
    rows: list[_Row],
    positions: torch.Tensor,
    lengths: torch.Tensor,
    first_row: int,
    first_token: int,
    kv_cache,
    device: torch.device,
) -> PagedKV:
    """Page table, key counts and write slots of the cached rows (their queries' positions)."""
    size = kv_cache.page_size
    width = max(len(row.pages) for row in rows)
    table = torch.tensor([row.pages + [0] * (width - len(row.pages)) for row in rows], dtype=torch.int32)
    row_of = torch.repeat_interleave(torch.arange(len(rows)), lengths, output_size=len(positions))
    slots = table[row_of, positions // size].long() * size + positions % size
    cu = torch.zeros(len(rows) + 1, dtype=torch.int32)
    cu[1:] = lengths.cumsum(0)
    kv_lens = torch.tensor([row.req.canvas_len for row in rows], dtype=torch.int32)
    return PagedKV(
        k=kv_cache.k,
        v=kv_cache.v,
        page_size=size,
        first_row=first_row,
        first_token=first_token,
        cu_seqlens_q=to_device(cu, device),
        page_table=to_device(table, device),
        kv_lens=to_device(kv_lens, device),
        write_slots=to_device(slots, device),
    )
