"""RMSNorm (+ residual add) at LLaDA-8B width 4096, bf16: Triton vs torch eager vs torch.compile."""

import functools
import os

import torch
from _common import H200_COPY_TBPS, Report, bench_ms, tbps

from kernels.rms_norm import rms_norm, rms_norm_ref

DIM = 4096


def main() -> None:
    report = Report(
        "bench_rms_norm",
        ["rows", "impl", "ms", "TB/s", "frac_measured_copy", "frac_h200_copy"],
    )
    compiled = None
    if os.environ.get("BENCH_NO_COMPILE") != "1":
        compiled = torch.compile(rms_norm_ref, dynamic=False)
    for rows in (32, 512, 2048, 8192):
        x = torch.randn(rows, DIM, device="cuda", dtype=torch.bfloat16)
        res = torch.randn_like(x)
        w = torch.randn(DIM, device="cuda", dtype=torch.bfloat16)
        num_bytes = 4 * x.numel() * 2 + DIM * 2  # read x, residual; write y, x + residual
        impls = {"triton": rms_norm, "torch_eager": rms_norm_ref}
        if compiled is not None:
            impls["torch_compile"] = compiled
        for name, fn in impls.items():
            try:
                ms = bench_ms(functools.partial(fn, x, w, 1e-5, res))
            except Exception as exc:  # keep the other rows: one failing impl is reported, not fatal
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
