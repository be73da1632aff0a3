"""ModelRunner: turns a SchedulerOutput into one packed forward and the commits of every request.

Rows: one conditional row per forwarded request, plus, with CFG, an unconditional row (the same
canvas with every prompt position replaced by the mask id, and a K/V cache of its own). A row
queries the whole canvas (exact mode, or a cached request entering a block: the refresh that fills
its cache), or, with Fast-dLLM's approximate caches, the active block and everything after it
(prefix) or the active block alone (dual), the other keys coming from the cache (see
`Request.query_range` and models/forward_batch.py). Only the masked positions of each active block
reach the LM head. Requests whose canvas did not change since their last forward
take no row and reuse that forward's logits (exact: the network has no time input). With CUDA graphs
on, a dual-cache block step replays a captured graph of the network's blocks (engine/cuda_graphs.py)
and only the head runs eagerly.

Kept across steps, rebuilt only when what they depend on changes: the forward's layout
(engine/batch_layout.py: rows, positions, page tables) and the requests' settings
(engine/request_table.py). A step itself builds its input ids and logits index from the requests'
host lists, and the post-forward reads back one matrix of commits.
"""

from __future__ import annotations

import os

import torch

from engine.batch_layout import Layout, build_layout
from engine.cuda_graphs import StepGraphs
from engine.kv_cache import KVCache
from engine.outputs import SchedulerOutput, StepOutput
from engine.post_forward import PostForward
from engine.transfer import int_tensor, to_device
from engine.unmasking import may_commit_nothing
from models.forward_batch import PackedBatch
from models.registry import LoadedModel


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
        self._layout: Layout | None = None  # the last forward's, reused while its rows stay the same
        self.graphs: StepGraphs | None = None  # CUDA graphs of the cached block step (Engine sets them)

    def use_cuda_graphs(self, max_rows: int, capture: bool = True, **options) -> None:
        """Run the cached block steps of up to `max_rows` rows through CUDA graphs (engine/cuda_graphs.py);
        capture=False runs their padded static-buffer forward eagerly (what the CPU tests check).
        `options`: StepGraphs' keywords (min_width_positions)."""
        spec = self.spec
        self.graphs = StepGraphs(
            self.model,
            self.ops,
            self.kv_cache,
            spec.mask_token_id,
            max_rows,
            spec.max_sequence_length,
            capture,
            **options,
        )

    def init_request(self, request) -> None:
        """Fix the seed that keys the request's random draws (its own, or a random one)."""
        seed = request.params.seed
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little") >> 1
        request.seed = seed

    @torch.inference_mode()  # the post-forward edits the forward's logits in place (EOS ban)
    def execute(self, sched: SchedulerOutput) -> StepOutput:
        layout = self._layout_of(sched.forward)
        guided, num_rows, num_tokens = self._forward(layout)
        forward = layout.ordered if layout is not None else []  # the order of the logits rows
        parts, start = [guided], 0
        for req in forward:
            req.num_forward_passes += 1
            end = start + len(req.masked)
            # A copy: a view would keep the whole batch's logits alive until the request moves on.
            # (exact only for a network without a time input)
            keep = may_commit_nothing(req) and not self.spec.time_conditioned
            req.reuse_logits = (req.canvas_version, guided[start:end].clone()) if keep else None
            start = end
        parts += [req.reuse_logits[1] for req in sched.reuse]
        logits = torch.cat(parts) if sched.reuse else guided
        commits = self.post_forward.commits(forward + sched.reuse, logits)
        return StepOutput(commits=commits, num_rows=num_rows, num_tokens=num_tokens)

    def _layout_of(self, requests: list) -> Layout | None:
        """The layout of the forwarded requests: the last step's while it still holds (None: none)."""
        if not requests:
            return None
        if self._layout is None or not self._layout.is_current(requests):
            self._layout = build_layout(requests, self.shift, self.kv_cache, self.device)
        return self._layout

    def _forward(self, layout: Layout | None) -> tuple[torch.Tensor, int, int]:
        """One packed forward; returns the guided logits [M, V] fp32 of the forwarded requests' masked
        positions, request after request in the layout's order (empty when nothing is forwarded)."""
        if layout is None:
            return torch.empty((0, self.spec.vocab_size), device=self.device), 0, 0
        ids = to_device(int_tensor(layout.ids(self.spec.mask_token_id)), self.device)
        index, num_guided = layout.logits_index()
        index_t = to_device(int_tensor(index), self.device)
        hidden = self.graphs.hidden(layout, ids) if self.graphs is not None else None
        if hidden is not None:  # a graph replayed the blocks; the head takes the masked rows
            flat = self.model.head(hidden[index_t], self.ops).float()
        else:
            batch = PackedBatch(
                ids, layout.positions, layout.cu_seqlens, max_len=layout.max_len, kv=layout.kv
            )
            flat = self.model(batch, self.ops, index_t).float()
        num_cond = len(index) - num_guided  # the unconditional rows come last
        guided = flat[:num_cond]
        if num_guided:  # the CFG requests' rows lead: un + (w + 1) * (cond - un)
            un = flat[num_cond:]
            w = to_device(torch.tensor(layout.guidance_weights(), dtype=guided.dtype), self.device)[:, None]
            guided[:num_guided] = un + w * (guided[:num_guided] - un)
        for req, _ in layout.ranges:
            req.kv_block = req.block  # a cached request's refresh (if this was one) is done
        return guided, len(layout.rows), len(ids)
