"""RMSNorm (+ residual add) at LLaDA-8B width 4096, bf16: Triton vs torch eager vs torch.compile."""

import os

import torch
from _common import DEVICE, SMOKE, Report, add_bandwidth_rows, pick

from kernels.rms_norm import rms_norm, rms_norm_ref

DIM = pick(4096, 96)


def main() -> None:
    report = Report(
        "bench_rms_norm",
        ["rows", "impl", "ms", "TB/s", "frac_measured_copy", "frac_h200_copy"],
    )
    compiled = None
    if not SMOKE and os.environ.get("BENCH_NO_COMPILE") != "1":
        compiled = torch.compile(rms_norm_ref, dynamic=False)
    for rows in pick((32, 512, 2048, 8192), (3, 17)):
        x = torch.randn(rows, DIM, device=DEVICE, dtype=torch.bfloat16)
        res = torch.randn_like(x)
        w = torch.randn(DIM, device=DEVICE, dtype=torch.bfloat16)
        num_bytes = 4 * x.numel() * 2 + DIM * 2  # read x, residual; write y, x + residual
        impls = {"triton": rms_norm, "torch_eager": rms_norm_ref}
        if compiled is not None:
            impls["torch_compile"] = compiled
        add_bandwidth_rows(report, impls, (x, w, 1e-5, res), num_bytes, rows=rows)
    report.save()


if __name__ == "__main__":
    main()
