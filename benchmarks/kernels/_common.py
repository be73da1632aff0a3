"""Shared helpers for the kernel benchmarks: timing, roofs, device record, CSV + markdown output.

Roofs (DESIGN.md section 4, measured on the lent H200): copy bandwidth 4.28 TB/s, bf16 dense matmul
800 TFLOP/s. Each run also measures this device's copy bandwidth, and reports fractions of both.
Results go to $BENCH_OUT (else $OUT, else benchmarks/scratch; gpu_check.sh points it at the results
folder) as <name>.csv and <name>.md, each naming the device.

Smoke mode (`BENCH_SMOKE=1 TRITON_INTERPRET=1`, what CI runs): tiny shapes on the CPU, the Triton
kernels interpreted, a pretend 8-SM device so the split launches run, wall-clock timing, no memory
figures. It checks that every benchmark runs end to end and writes its tables; its figures mean nothing.
"""

from __future__ import annotations

import csv
import functools
import os
import platform
import time
from pathlib import Path

import torch
import triton

H200_COPY_TBPS = 4.28
H200_BF16_TFLOPS = 800.0
SMOKE = os.environ.get("BENCH_SMOKE") == "1"
DEVICE = "cpu" if SMOKE else "cuda"


def pick(full, smoke):
    """The benchmark's sizes, or the smoke run's."""
    return smoke if SMOKE else full


def out_dir() -> Path:
    path = Path(os.environ.get("BENCH_OUT") or os.environ.get("OUT") or "benchmarks/scratch")
    path.mkdir(parents=True, exist_ok=True)
    return path


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({platform.processor()})"


def sm_count() -> int:
    return 8 if SMOKE else torch.cuda.get_device_properties(0).multi_processor_count


def synchronize() -> None:
    if not SMOKE:
        torch.cuda.synchronize()


def empty_cache() -> None:
    if not SMOKE:
        torch.cuda.empty_cache()


def bench_ms(fn, warmup_ms: int = 25, rep_ms: int = 100) -> float:
    """Median time of fn() in milliseconds (CUDA graphs not used; L2 flushed by do_bench)."""
    if SMOKE:  # one call: the figure is not used, the run is
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))


def measure_copy_tbps() -> float:
    """Device-to-device copy of 1 GiB (16 MiB in a smoke run): (read + write) bytes / time, TB/s."""
    num_bytes = pick(2**30, 2**24)
    src = torch.empty(num_bytes // 2, dtype=torch.bfloat16, device=DEVICE).uniform_()
    dst = torch.empty_like(src)
    ms = bench_ms(functools.partial(dst.copy_, src))
    del src, dst
    empty_cache()
    return 2 * num_bytes / (ms * 1e-3) / 1e12


def peak_mem_mb(fn) -> float:
    """Extra peak allocated memory of one fn() call above what was allocated before it, MiB (NaN in a
    smoke run: the CPU allocator keeps no peak)."""
    if SMOKE:
        fn()
        return float("nan")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def tbps(num_bytes: float, ms: float) -> float:
    return num_bytes / (ms * 1e-3) / 1e12


def tflops(flops: float, ms: float) -> float:
    return flops / (ms * 1e-3) / 1e12


class Report:
    """Rows of one benchmark; `save()` writes CSV and markdown with the device and versions on top."""

    def __init__(self, name: str, columns: list[str]):
        self.name = name
        self.columns = columns
        self.rows: list[dict] = []
        self.copy_tbps = measure_copy_tbps()
        self.header = (
            f"{name} on {device_name()} | torch {torch.__version__} | triton {triton.__version__} | "
            f"measured copy {self.copy_tbps:.2f} TB/s (H200 roof {H200_COPY_TBPS} TB/s, "
            f"bf16 matmul roof {H200_BF16_TFLOPS:.0f} TFLOP/s) | {time.strftime('%Y-%m-%d %H:%M:%S')}"
        )
        print(self.header, flush=True)

    def add(self, **row) -> None:
        self.rows.append(row)
        print("  " + "  ".join(f"{k}={_fmt(row.get(k))}" for k in self.columns), flush=True)

    def save(self) -> None:
        folder = out_dir()
        with open(folder / f"{self.name}.csv", "w", newline="") as f:
            f.write(f"# {self.header}\n")
            writer = csv.DictWriter(f, fieldnames=["device", *self.columns])
            writer.writeheader()
            for row in self.rows:
                writer.writerow({"device": device_name(), **{k: row.get(k, "") for k in self.columns}})
        lines = [f"### {self.name}", "", self.header, "", "| " + " | ".join(self.columns) + " |"]
        lines.append("|" + "---|" * len(self.columns))
        for row in self.rows:
            lines.append("| " + " | ".join(_fmt(row.get(k)) for k in self.columns) + " |")
        (folder / f"{self.name}.md").write_text("\n".join(lines) + "\n")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def add_bandwidth_rows(report: Report, impls: dict, args: tuple, num_bytes: float, **labels) -> None:
    """Time each implementation on `args` and add a bandwidth row for it (labels first).

    One failing implementation is reported and skipped, so the other rows are kept.
    """
    for name, fn in impls.items():
        try:
            ms = bench_ms(functools.partial(fn, *args))
        except Exception as exc:
            print(f"  {name} {labels} failed: {type(exc).__name__}: {exc}")
            continue
        bw = tbps(num_bytes, ms)
        report.add(
            **labels,
            impl=name,
            ms=ms,
            **{"TB/s": bw},
            frac_measured_copy=bw / report.copy_tbps,
            frac_h200_copy=bw / H200_COPY_TBPS,
        )


def add_timed(report: Report, impl: str, fn, cost: tuple[float, float], **labels) -> None:
    """Time fn() and add its row; a failing implementation is reported and skipped."""
    try:
        ms = bench_ms(fn)
    except Exception as exc:
        print(f"  {impl} {labels} failed: {type(exc).__name__}: {exc}")
        return
    add_row(report, impl, ms, cost, **labels)


def add_row(report: Report, impl: str, ms: float, cost: tuple[float, float], **labels) -> None:
    """cost: (bytes, FLOPs) of the workload."""
    bw, fl = tbps(cost[0], ms), tflops(cost[1], ms)
    report.add(
        **labels,
        impl=impl,
        ms=ms,
        **{"TB/s": bw, "TFLOP/s": fl},
        frac_measured_copy=bw / report.copy_tbps,
        frac_h200_copy=bw / H200_COPY_TBPS,
        frac_bf16_matmul=fl / H200_BF16_TFLOPS,
    )
