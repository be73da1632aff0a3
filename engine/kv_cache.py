"""Engine-owned K/V memory for the approximate caches (Fast-dLLM prefix and dual cache).

One pool per engine, allocated once at start from a byte budget: for every layer a K and a V tensor
[num_pages * page_size, n_kv_heads, head_dim] on the model's device and dtype. Position j of a
cached row lives at slot pages[j // page_size] * page_size + j % page_size of its page list, so pages
freed by one request serve any other without fragmentation. Exact-mode requests take no pages.

`PageAllocator` is the bookkeeping (pure CPU, testable without a model); `KVCache` adds the tensors.
A request takes all its pages when the scheduler admits it (prompt + max_tokens positions per row,
two rows under CFG: known up front, so a running request never runs out) and gives them back when it
finishes, is aborted, times out or its client leaves.
"""

from __future__ import annotations

import torch

PAGE_SIZE = 16  # positions per page
GIB = 1 << 30


class PageAllocator:
    """Free list of page ids 0..num_pages-1."""

    def __init__(self, num_pages: int):
        self.num_pages = num_pages
        self._free = list(range(num_pages - 1, -1, -1))  # pop() hands out low ids first

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_pages - len(self._free)

    @property
    def usage(self) -> float:
        """Fraction of pages in use (0 when the pool is empty)."""
        return self.num_used / self.num_pages if self.num_pages else 0.0

    def can_allocate(self, n: int) -> bool:
        return n <= len(self._free)

    def allocate(self, n: int) -> list[int]:
        if n > len(self._free):
            raise RuntimeError(f"KV cache: {n} pages asked for, {len(self._free)} free")
        return [self._free.pop() for _ in range(n)]

    def free(self, pages: list[int]) -> None:
        self._free.extend(reversed(pages))


def pages_for(num_positions: int, page_size: int = PAGE_SIZE) -> int:
    return -(-num_positions // page_size)


class KVCache:
    """The pool's tensors plus its allocator. `layer(i)` gives layer i's (k, v) slot tensors."""

    def __init__(
        self,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        num_pages: int,
        dtype: torch.dtype,
        device: torch.device,
        page_size: int = PAGE_SIZE,
    ):
        self.page_size = page_size
        self.allocator = PageAllocator(num_pages)
        # One page past the allocator's: where the padding rows of a CUDA-graph step write and read
        # (engine/cuda_graphs.py); no request ever holds it. Only with a pool at all.
        self.scratch_page = num_pages if num_pages else None
        shape = (num_layers, (num_pages + (num_pages > 0)) * page_size, num_kv_heads, head_dim)
        # torch.empty: on the CPU large blocks are mapped lazily, so unused pages cost no memory.
        self.k = torch.empty(shape, dtype=dtype, device=device)
        self.v = torch.empty(shape, dtype=dtype, device=device)

    @staticmethod
    def page_bytes(num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
        elem = torch.empty((), dtype=dtype).element_size()
        return 2 * num_layers * PAGE_SIZE * num_kv_heads * head_dim * elem

    @property
    def num_bytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k[index], self.v[index]


def kv_budget_bytes(kv_cache_memory: float | None, device: torch.device) -> int:
    """The pool's byte budget: `kv_cache_memory` GiB when given; else on CUDA half of the memory
    still free once the weights are loaded (the rest is left to activations and the sampler, like
    vLLM's gpu_memory_utilization), and 1 GiB on the CPU (mapped lazily: untouched pages cost no RSS)."""
    if kv_cache_memory is not None:
        return int(kv_cache_memory * GIB)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free // 2
    return GIB
