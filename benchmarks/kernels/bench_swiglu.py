"""SwiGLU at LLaDA-8B MLP width 12288, bf16: Triton vs torch eager vs torch.compile."""

import os

import torch
from _common import DEVICE, SMOKE, Report, add_bandwidth_rows, pick

from kernels.swiglu import swiglu, swiglu_ref

HIDDEN = pick(12288, 200)


def main() -> None:
    report = Report("bench_swiglu", ["rows", "impl", "ms", "TB/s", "frac_measured_copy", "frac_h200_copy"])
    compiled = None
    if not SMOKE and os.environ.get("BENCH_NO_COMPILE") != "1":
        compiled = torch.compile(swiglu_ref, dynamic=False)
    for rows in pick((32, 512, 2048, 8192), (3, 17)):
        fused = torch.randn(rows, 2 * HIDDEN, device=DEVICE, dtype=torch.bfloat16)
        gate, up = fused.chunk(2, dim=-1)  # as produced by a fused gate/up projection
        num_bytes = 3 * rows * HIDDEN * 2
        impls = {"triton": swiglu, "torch_eager": swiglu_ref}
        if compiled is not None:
            impls["torch_compile"] = compiled
        add_bandwidth_rows(report, impls, (gate, up), num_bytes, rows=rows)
    report.save()


if __name__ == "__main__":
    main()
