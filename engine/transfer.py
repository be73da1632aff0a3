"""Host tensors a step builds, and their way to the device."""

from __future__ import annotations

import array

import torch


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor built this step, on `device`: through pinned memory without blocking on CUDA (the
    caching host allocator keeps the pinned block until the copy is done), as is elsewhere."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor if device.type == "cpu" else tensor.to(device)


def int_tensor(values) -> torch.Tensor:
    """A host int64 tensor of Python ints from any iterable: through array('q'), several times faster
    than torch.tensor on the long lists a step builds (canvas ids, masked positions)."""
    buffer = array.array("q", values)
    if not buffer:
        return torch.empty(0, dtype=torch.int64)
    return torch.frombuffer(buffer, dtype=torch.int64)  # shares (and keeps alive) the array
