"""What the launchers ask of the device: its SM count, and how far to split a launch that cannot fill it."""

import functools

import torch
import triton


@functools.cache
def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; 0 for anything else (no split launches)."""
    if device.type != "cuda":
        return 0
    return torch.cuda.get_device_properties(device).multi_processor_count


def splits_to_fill(programs: int, max_by_work: int, sm_count: int) -> int:
    """Splits per program for about two programs per SM, no more than the work allows
    (`max_by_work`) and at most 16; 1 without a GPU. Shapes only, so no host sync."""
    if sm_count == 0 or programs == 0:
        return 1
    return max(1, min(16, max_by_work, triton.cdiv(2 * sm_count, programs)))
