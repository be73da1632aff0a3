"""Host tensors a step builds, their way to the device, and the step's one way back."""

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


class HostBuffer:
    """The step's transfer to the host: on CUDA through one pinned buffer, grown when too small and kept,
    with a non-blocking copy and a wait on its event; elsewhere the tensor itself. The returned host
    tensor is valid until the next `fetch`."""

    def __init__(self):
        self._pinned: torch.Tensor | None = None
        self._event = None

    def fetch(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.device.type != "cuda":
            return tensor.cpu()
        flat = tensor.reshape(-1)
        n = flat.numel()
        pinned = self._pinned
        if pinned is None or pinned.dtype != flat.dtype or pinned.numel() < n:
            pinned = self._pinned = torch.empty(max(n, 1024), dtype=flat.dtype, pin_memory=True)
            self._event = torch.cuda.Event()
        out = pinned[:n]
        out.copy_(flat, non_blocking=True)  # on the tensor's device's current stream, as the event
        self._event.record(torch.cuda.current_stream(tensor.device))
        self._event.synchronize()
        return out.view(tensor.shape)
