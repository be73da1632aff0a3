"""Rotary embedding on [N, 32, 128] bf16 (LLaDA-8B q or k): Triton vs torch eager."""

import torch
from _common import Report, add_bandwidth_rows

from kernels.rotary import rotary, rotary_ref


def main() -> None:
    report = Report("bench_rotary", ["tokens", "impl", "ms", "TB/s", "frac_measured_copy", "frac_h200_copy"])
    inv_freq = 1.0 / (500000.0 ** (torch.arange(0, 128, 2, device="cuda").float() / 128))
    angles = torch.arange(8192, device="cuda").float()[:, None] * inv_freq
    cos, sin = angles.cos(), angles.sin()
    for tokens in (32, 512, 2048, 8192):
        x = torch.randn(tokens, 32, 128, device="cuda", dtype=torch.bfloat16)
        pos = torch.randint(0, 8192, (tokens,), device="cuda")
        num_bytes = 2 * x.numel() * 2 + tokens * 128 * 4  # x in and out; a cos and a sin row per token
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
