"""CUDA graphs of the cached block step: one replay instead of hundreds of kernel launches.

Which steps: those whose every forwarded row is a K/V-cached row querying its active block (one
position more for shifted-logits families), all blocks of one length q: the steady state of the dual
cache. Full-canvas refreshes (on entering a block), exact-mode rows, prefix-cache rows before their
last block (the block and all after it), mixed block lengths and batches past the ladder's top run
eagerly.

What is captured: the network's blocks (`DiffusionLM.hidden`: embedding, every layer with its
attention over the paged cache and its K/V writes) for a fixed shape: rows padded up the ladder
(1, 2, 4, 8, ... rows; CFG rows count), q, and the page-table width: a power of two, at least
1024 positions' worth (the attention's key-range split is chosen from the width, so a table much
wider than the keys would start programs that find none), at most the longest request the engine
admits. The head and the post-forward run eagerly after the replay on the masked positions only:
their count changes every step, and they are a handful of launches where the blocks are hundreds.

Static inputs: ids, positions, write slots, page table, key counts and row bounds live in buffers
shared by every graph of the same (q, width); a replay's graph reads the leading rows. They are
written when the forward's layout changes (a request joins, leaves or enters a block); per step only
the ids are copied. Padding rows query positions 0 .. q - 1 of the pool's scratch page
(engine/kv_cache.py), which no request holds: they write and read only there. Each graph keeps its
inputs (and the rotary tables it read) alive for as long as it may be replayed.

When requests default to the dual cache (`--cache dual`, or the checkpoint's), the engine captures
the whole ladder for the default block length and the narrowest width at start (`capture_ladder`)
and logs the time and memory it took; any other shape is captured on its first step.

Faults: before a capture, a second warm-up runs with host synchronisation made an error, so an op
that would wait for the device (which a capture cannot hold) fails there, and that shape runs
eagerly from then on, with one warning. A capture that fails once it has begun (out of memory) is
cleaned up as far as torch allows and stops all further captures (one warning); graphs already
captured keep serving. Without CUDA the same padded static-buffer forward runs eagerly
(`capture=False`): the tests check on the CPU that it gives the tokens of the plain forward.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from models.forward_batch import PackedBatch, PagedKV

log = logging.getLogger("dllm.engine")

MODES = ("auto", "on", "off")


def resolve_mode(mode: str, device: torch.device, kernels: str) -> bool:
    """Whether the engine uses CUDA graphs: `auto` = on with CUDA and the Triton kernels (the torch
    references read lengths on the host, which a capture cannot hold); `on` without them is an error."""
    if mode not in MODES:
        raise ValueError(f"cuda_graphs must be one of {', '.join(MODES)}; got {mode!r}")
    if mode == "off":
        return False
    usable = device.type == "cuda" and kernels == "triton"
    if mode == "on" and not usable:
        why = "a CUDA device" if device.type != "cuda" else "the Triton kernels (--kernels triton)"
        raise ValueError(f"cuda_graphs 'on' needs {why}; the engine runs on {device} with {kernels} kernels")
    return usable


def ladder(max_rows: int) -> list[int]:
    """Padded row counts: 1, 2, 4, ... up to the first at least `max_rows`."""
    sizes = [1]
    while sizes[-1] < max_rows:
        sizes.append(sizes[-1] * 2)
    return sizes


MIN_WIDTH_POSITIONS = 1024  # the narrowest page table a graph has, in positions


@dataclass
class _Buffers:
    """Static inputs of every graph of one (q, width), sized for the ladder's top."""

    ids: torch.Tensor  # [rows * q] int64
    positions: torch.Tensor  # [rows * q] int64
    write_slots: torch.Tensor  # [rows * q] int64
    page_table: torch.Tensor  # [rows, width] int32
    kv_lens: torch.Tensor  # [rows] int32
    cu_seqlens: torch.Tensor  # [rows + 1] int32: 0, q, 2q, ... (constant)


@dataclass
class _Graph:
    replay: Callable[[], torch.Tensor]  # -> the blocks' output [rows * q, d]
    inputs: PackedBatch  # what the graph reads, kept alive with it


class StepGraphs:
    """Graphed forwards of the cached block step, keyed by (padded rows, q, page-table width)."""

    def __init__(
        self,
        model,
        ops,
        kv_cache,
        mask_id: int,
        max_rows: int,
        max_len: int,
        capture: bool,
        min_width_positions: int = MIN_WIDTH_POSITIONS,
    ):
        """max_len: the longest canvas the engine admits (the widest page table)."""
        assert kv_cache is not None and kv_cache.scratch_page is not None, "needs a K/V pool"
        self.model, self.ops, self.kv = model, ops, kv_cache
        self.mask_id = mask_id
        self.sizes = ladder(max_rows)
        size = kv_cache.page_size
        self.max_width = -(-max_len // size)
        self.min_width = min(_pow2(-(-min_width_positions // size)), self.max_width)
        self.capture = capture
        self.stopped = False  # a capture failed midway: no more captures
        self.device = kv_cache.k.device
        # Held here too: should the model ever rebuild its tables, the graphs still read these.
        self.rope = model.rope_tables(1, self.device)
        self._buffers: dict[tuple[int, int], _Buffers] = {}
        self._graphs: dict[tuple[int, int, int], _Graph | None] = {}  # None: runs eagerly
        self._filled = None  # the layout whose rows the buffers hold
        self._shape: tuple = (None, None)  # (layout, its shape_of)
        self._pool = torch.cuda.graph_pool_handle() if capture else None
        self._stream = torch.cuda.Stream(self.device) if capture else None  # captures run on it
        self.num_captured = 0
        self.num_replays = 0  # steps that took a graph (or its emulation)
        self.capture_s = 0.0
        self.capture_bytes = 0

    def width_of(self, pages: int) -> int:
        """The page-table width of a graph for rows of at most `pages` pages."""
        return min(max(_pow2(pages), self.min_width), self.max_width)

    def shape_of(self, layout) -> tuple[int, int, int] | None:
        """(padded rows, q, width) of a graphable layout; None: the step runs eagerly."""
        if self._shape[0] is not layout:
            self._shape = (layout, self._graphable_shape(layout))
        return self._shape[1]

    def _graphable_shape(self, layout) -> tuple[int, int, int] | None:
        kv = layout.kv
        if kv is None or kv.first_row != 0:
            return None  # uncached rows (exact mode)
        # Every row queries its active block: no refresh (a whole canvas, whose length would key a
        # graph per prompt length) and no prefix row before its last block.
        if len(layout.ranges) != len(layout.requests):
            return None
        if any(q != req.block_bounds() for req, q in layout.ranges):
            return None
        q = layout.rows[0].end - layout.rows[0].start
        if any(row.end - row.start != q for row in layout.rows):
            return None
        padded = next((s for s in self.sizes if s >= len(layout.rows)), None)
        pages = kv.page_table.shape[1]
        if padded is None or pages > self.max_width:
            return None
        return padded, q, self.width_of(pages)

    def hidden(self, layout, ids: torch.Tensor) -> torch.Tensor | None:
        """The blocks' output [N, d] of this step's rows through a graph (ids [N] on the device), or
        None when the step must run eagerly."""
        shape = self.shape_of(layout)
        if shape is None:
            return None
        padded, q, width = shape
        buffers = self._buffers_for(q, width)
        if self._filled is not layout:
            self._fill(buffers, layout, padded, q)
        n = len(layout.rows) * q
        buffers.ids[:n].copy_(ids)
        if shape not in self._graphs:
            self._graphs[shape] = self._make(shape, buffers)
        graph = self._graphs[shape]
        if graph is None:
            return None
        self.num_replays += 1
        return graph.replay()[:n]

    @torch.inference_mode()  # as the steps that replay them (and that capture other shapes) run
    def capture_ladder(self, q: int) -> None:
        """Capture every padded row count for blocks of q query positions at the narrowest width,
        padding rows only (the engine's start, for the default block length); log what it took."""
        start, before = time.perf_counter(), (self.num_captured, self.capture_bytes)
        width = self.min_width
        buffers = self._buffers_for(q, width)
        for padded in reversed(self.sizes):  # the largest first: the smaller ones reuse its memory
            if (padded, q, width) not in self._graphs:
                self._fill(buffers, None, padded, q)
                self._graphs[padded, q, width] = self._make((padded, q, width), buffers)
        if self.capture:
            log.info(
                "CUDA graphs for blocks of %d positions: %d of %d captured in %.2f s, +%.1f MiB",
                q,
                self.num_captured - before[0],
                len(self.sizes),
                time.perf_counter() - start,
                (self.capture_bytes - before[1]) / 2**20,
            )

    def _buffers_for(self, q: int, width: int) -> _Buffers:
        key = (q, width)
        if key not in self._buffers:
            rows, dev = self.sizes[-1], self.device
            self._buffers[key] = _Buffers(
                ids=torch.full((rows * q,), self.mask_id, dtype=torch.int64, device=dev),
                positions=torch.zeros(rows * q, dtype=torch.int64, device=dev),
                write_slots=torch.zeros(rows * q, dtype=torch.int64, device=dev),
                page_table=torch.zeros((rows, width), dtype=torch.int32, device=dev),
                kv_lens=torch.zeros(rows, dtype=torch.int32, device=dev),
                cu_seqlens=torch.arange(0, (rows + 1) * q, q, dtype=torch.int32, device=dev),
            )
        return self._buffers[key]

    def _fill(self, b: _Buffers, layout, padded: int, q: int) -> None:
        """The layout's rows (None: none), then padding rows up to `padded`: mask ids at positions
        0 .. q - 1 of the scratch page."""
        rows = len(layout.rows) if layout is not None else 0
        n, n_pad = rows * q, padded * q
        size, scratch = self.kv.page_size, self.kv.scratch_page
        if rows:
            kv = layout.kv
            b.positions[:n].copy_(layout.positions)
            b.write_slots[:n].copy_(kv.write_slots)
            b.page_table[:rows].fill_(scratch)
            b.page_table[:rows, : kv.page_table.shape[1]].copy_(kv.page_table)
            b.kv_lens[:rows].copy_(kv.kv_lens)
        pad_pos = torch.arange(q, device=self.device).repeat(padded - rows)
        b.ids[n:n_pad].fill_(self.mask_id)
        b.positions[n:n_pad].copy_(pad_pos)
        b.write_slots[n:n_pad].copy_(scratch * size + pad_pos % size)
        b.page_table[rows:padded].fill_(scratch)
        b.kv_lens[rows:padded].fill_(q)
        self._filled = layout

    def _batch(self, b: _Buffers, padded: int, q: int) -> PackedBatch:
        n, cu = padded * q, b.cu_seqlens[: padded + 1]
        kv = PagedKV(
            k=self.kv.k,
            v=self.kv.v,
            page_size=self.kv.page_size,
            first_row=0,
            first_token=0,
            cu_seqlens_q=cu,
            page_table=b.page_table[:padded],
            kv_lens=b.kv_lens[:padded],
            write_slots=b.write_slots[:n],
        )
        return PackedBatch(b.ids[:n], b.positions[:n], cu, max_len=self.rope[0].shape[0], kv=kv)

    def _make(self, shape: tuple[int, int, int], b: _Buffers) -> _Graph | None:
        padded, q, width = shape
        batch = self._batch(b, padded, q)
        run = lambda: self.model.hidden(batch, self.ops)  # noqa: E731
        if not self.capture:
            return _Graph(replay=run, inputs=batch)
        if self.stopped:
            return None
        try:
            self._warm_up(run)
        except Exception as exc:  # an op a graph cannot hold: this shape stays eager
            self._warn(shape, "its warm-up failed", exc)
            return None
        try:
            graph, hidden = self._capture(run)
        except Exception as exc:  # out of memory mid-capture: torch's capture state may be left behind
            self._abandon_capture()
            self._warn(shape, "the capture failed; no more captures", exc)
            return None

        def replay() -> torch.Tensor:
            with torch.cuda.device(self.device):  # the graph launches on the current device's stream
                graph.replay()
            return hidden

        return _Graph(replay=replay, inputs=batch)

    def _warn(self, shape: tuple[int, int, int], what: str, exc: Exception) -> None:
        reason = (str(exc).strip().splitlines() or [""])[0]
        log.warning(
            "CUDA graph of %d rows x %d positions (%d pages): %s, runs eagerly: %s: %s",
            *shape,
            what,
            type(exc).__name__,
            reason,
        )

    def _warm_up(self, run: Callable[[], torch.Tensor]) -> None:
        """Run twice on a side stream (Triton compiles, the allocator settles); the second time any
        host synchronisation raises, before a capture would be broken by it."""
        with torch.cuda.device(self.device):
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                run()
                mode = torch.cuda.get_sync_debug_mode()
                torch.cuda.set_sync_debug_mode("error")
                try:
                    run()
                finally:
                    torch.cuda.set_sync_debug_mode(mode)
            torch.cuda.current_stream(self.device).wait_stream(stream)

    def _capture(self, run: Callable[[], torch.Tensor]) -> tuple:
        """Capture `run` on this object's stream into the shared pool; count its time and memory."""
        start = time.perf_counter()
        with torch.cuda.device(self.device):
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()  # what torch.cuda.graph does first: measure from there
            before = torch.cuda.memory_reserved(self.device)
            graph = torch.cuda.CUDAGraph()
            # thread_local: a CUDA call another thread makes meanwhile does not break this capture
            with torch.cuda.graph(
                graph, pool=self._pool, stream=self._stream, capture_error_mode="thread_local"
            ):
                hidden = run()
            torch.cuda.synchronize(self.device)
            added = torch.cuda.memory_reserved(self.device) - before
        self.num_captured += 1
        self.capture_s += time.perf_counter() - start
        self.capture_bytes += added
        return graph, hidden

    def _abandon_capture(self) -> None:
        """After a capture that raised: stop capturing, end the pool's capture allocation if torch
        left it open (torch.cuda.graph skips that when ending the capture raises), and leave this
        object's stream if torch left it current."""
        self.stopped = True
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        try:
            torch._C._cuda_endAllocateToPool(index, self._pool)
        except Exception:  # not open (ended normally), or an API this torch does not have
            pass
        if torch.cuda.current_stream(self.device) == self._stream:
            torch.cuda.set_stream(torch.cuda.default_stream(self.device))


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()
