"""Rotary embedding on [N, 32, 128] bf16 (LLaDA-8B q or k): Triton vs torch eager."""

import torch
from _common import DEVICE, Report, add_bandwidth_rows, pick

from kernels.rotary import rotary, rotary_ref

HEADS, HEAD_DIM = pick((32, 128), (3, 64))


def main() -> None:
    report = Report("bench_rotary", ["tokens", "impl", "ms", "TB/s", "frac_measured_copy", "frac_h200_copy"])
    inv_freq = 1.0 / (500000.0 ** (torch.arange(0, HEAD_DIM, 2, device=DEVICE).float() / HEAD_DIM))
    angles = torch.arange(8192, device=DEVICE).float()[:, None] * inv_freq
    cos, sin = angles.cos(), angles.sin()
    for tokens in pick((32, 512, 2048, 8192), (3, 17)):
        x = torch.randn(tokens, HEADS, HEAD_DIM, device=DEVICE, dtype=torch.bfloat16)
        pos = torch.randint(0, 8192, (tokens,), device=DEVICE)
        num_bytes = 2 * x.numel() * 2 + tokens * HEAD_DIM * 4  # x in and out; a cos and a sin row per token
        add_bandwidth_rows(
            report,
            {"triton": rotary, "torch_eager": rotary_ref},
            (x, pos, cos, sin),
            num_bytes,
            tokens=tokens,
        )
    report.save()


if __name__ == "__main__":
    main()
