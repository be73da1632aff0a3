"""What one forward pass reads besides the weights: the packed batch, and where its K/V cache lives.

A batch packs the query positions of B rows along one axis ([N] ids and positions, cu_seqlens
[B + 1]). Rows come in two kinds, the uncached ones first:

- uncached rows (rows 0 .. first_paged_row - 1): their queries are their keys (a whole canvas,
  LLaDA's exact mode); attention stays inside the row and is fully bidirectional;
- paged rows (the rest, `PagedKV`): each writes the keys/values of its query positions into its
  pages of the engine's K/V pool, then attends to keys 0 .. kv_len - 1 read from those pages. A
  block-entry refresh queries the whole canvas (filling the cache), a prefix-cache step the block and
  everything after it, a dual-cache step only the block; the rest of the keys are the cached ones.

Per-layer cache tensors are passed explicitly (`PagedKV.k[layer]`), never through a global.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PagedKV:
    k: torch.Tensor  # [n_layers, num_slots, Hkv, D], the pool (written in place)
    v: torch.Tensor  # [n_layers, num_slots, Hkv, D]
    page_size: int
    first_row: int  # index of the first paged row in the batch
    first_token: int  # packed offset of its first query
    cu_seqlens_q: torch.Tensor  # [Bp + 1] int32, query bounds of the paged rows (from first_token)
    page_table: torch.Tensor  # [Bp, max_pages] int32
    kv_lens: torch.Tensor  # [Bp] int32: keys each paged row attends to
    write_slots: torch.Tensor  # [N - first_token] int64: pool slot of every paged query position


class PackedBatch:
    """Ids, positions and row bounds of B rows packed along one axis; `kv` for cached rows."""

    def __init__(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        cu_seqlens: torch.Tensor,
        max_len: int | None = None,
        kv: PagedKV | None = None,
    ):
        self.input_ids = input_ids  # [N] int64
        self.positions = positions  # [N] int64, absolute positions inside each row's canvas
        self.cu_seqlens = cu_seqlens  # [B + 1] int32
        self.max_len = max_len  # an upper bound of positions + 1, known on the host (None: read it)
        self.kv = kv

    @classmethod
    def from_sequences(cls, sequences: list[torch.Tensor], device) -> PackedBatch:
        lengths = [len(s) for s in sequences]
        ids = torch.cat(sequences).to(device)
        positions = torch.cat([torch.arange(n) for n in lengths]).to(device)
        cu = torch.tensor([0, *lengths], dtype=torch.int64).cumsum(0).to(torch.int32).to(device)
        return cls(ids, positions, cu, max_len=max(lengths, default=0))


def attend(ops, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: PackedBatch, layer: int):
    """Attention of one layer over the batch: q [N, H, D], k, v [N, Hkv, D] -> [N, H, D]."""
    kv = batch.kv
    if kv is None:
        return ops.attention(q, k, v, batch.cu_seqlens, batch.cu_seqlens)
    n0 = kv.first_token
    k_cache, v_cache = kv.k[layer], kv.v[layer]
    ops.write_kv(k_cache, v_cache, k[n0:], v[n0:], kv.write_slots)
    paged = ops.paged_attention(
        q[n0:], k_cache, v_cache, kv.cu_seqlens_q, kv.page_table, kv.kv_lens, kv.page_size
    )
    if n0 == 0:
        return paged
    cu = batch.cu_seqlens[: kv.first_row + 1]
    return torch.cat([ops.attention(q[:n0], k[:n0], v[:n0], cu, cu), paged])
