"""SwiGLU at LLaDA-8B MLP width 12288, bf16: Triton vs torch eager vs torch.compile."""

import functools
import os

import torch
from _common import H200_COPY_TBPS, Report, bench_ms, tbps

from kernels.swiglu import swiglu, swiglu_ref

HIDDEN = 12288


def main() -> None:
    report = Report("bench_swiglu", ["rows", "impl", "ms", "TB/s", "frac_measured_copy", "frac_h200_copy"])
    compiled = None
    if os.environ.get("BENCH_NO_COMPILE") != "1":
        compiled = torch.compile(swiglu_ref, dynamic=False)
    for rows in (32, 512, 2048, 8192):
        fused = torch.randn(rows, 2 * HIDDEN, device="cuda", dtype=torch.bfloat16)
        gate, up = fused.chunk(2, dim=-1)  # as produced by a fused gate/up projection
        num_bytes = 3 * rows * HIDDEN * 2
        impls = {"triton": swiglu, "torch_eager": swiglu_ref}
        if compiled is not None:
            impls["torch_compile"] = compiled
        for name, fn in impls.items():
            try:
                ms = bench_ms(functools.partial(fn, gate, up))
            except Exception as exc:
                print(f"  {name} rows={rows} failed: {type(exc).__name__}: {exc}")
                continue
            bw = tbps(num_bytes, ms)
            report.add(
                rows=rows,
                impl=name,
                ms=ms,
                **{"TB/s": bw},
                frac_measured_copy=bw / report.copy_tbps,
                frac_h200_copy=bw / H200_COPY_TBPS,
            )
    report.save()


if __name__ == "__main__":
    main()
