"""The kernels' GPU goals, judged from the benchmark CSVs (bench_*.csv) that one run left in a folder.

Goals (bf16, LLaDA-8B shapes):
- attention: at least 1.3x faster than the fastest SDPA backend on the padded equivalent, per
  workload; at least 50% of the roofline at 4096 keys. Roofline time = max(bytes / measured copy
  bandwidth, FLOPs / 800 TFLOP/s), so the fraction is the larger of the two fractions the benchmark
  records.
- rms_norm, swiglu: at least 70% of the measured copy bandwidth, judged at the largest row count
  (the smaller ones are listed: they are launch-bound).
- sampling head: at least 5x faster than LLaDA's float64 path and at least 20x less peak extra memory.
- moe (LLaDA-MoE shapes): the grouped kernels at least 5x faster than the torch loop over experts at
  256 tokens, and at most 2x slower than a dense matmul of the same active FLOPs, judged at the most
  tokens (1024): below that the grouped kernels must read every chosen expert's weights, the dense
  matmul one expert's, so the weights' read and not the FLOPs bounds them (the rest are listed).

Usage: `python benchmarks/kernels/goals.py [FOLDER]` (default $BENCH_OUT, else benchmarks/scratch);
prints the table and writes FOLDER/goals.md. A report, not a test: the exit status is 0 either way.
"""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path

ATTENTION_SPEEDUP = 1.3
ATTENTION_ROOF = 0.5
ELEMENTWISE_COPY = 0.7
SAMPLING_SPEEDUP = 5.0
SAMPLING_MEMORY = 20.0
MOE_VS_LOOP = 5.0
MOE_VS_DENSE = 0.5  # dense ms / grouped ms: at most 2x slower


@dataclass
class Verdict:
    goal: str
    workload: str
    figure: float
    target: float
    judged: bool = True  # False: listed for context, not counted

    @property
    def met(self) -> bool:
        return self.figure >= self.target


def read_rows(path: Path) -> list[dict]:
    """Rows of a benchmark CSV (its first line is a '#' header naming the device)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def device_of(folder: Path) -> str:
    for path in sorted(folder.glob("bench_*.csv")):
        rows = read_rows(path)
        if rows:
            return rows[0]["device"]
    return "unknown device"


def attention_verdicts(rows: list[dict]) -> list[Verdict]:
    """Per workload: the model's Triton run (splits as chosen) against the best padded SDPA run."""
    by_case: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        case = (row["batch"], row.get("queries") or "32", row["keys"])
        impl = row["impl"]
        if impl.startswith("sdpa"):
            by_case.setdefault(case, {})["sdpa"] = row
        elif impl.startswith("triton_varlen") and "no split" not in impl:
            by_case.setdefault(case, {})["triton"] = row
    out = []
    for (batch, queries, keys), pair in by_case.items():
        if "triton" not in pair:
            continue
        triton_row = pair["triton"]
        workload = f"B={batch}, {queries} queries vs {keys} keys"
        if "sdpa" in pair:
            speedup = float(pair["sdpa"]["ms"]) / float(triton_row["ms"])
            out.append(Verdict("attention speed vs SDPA (x)", workload, speedup, ATTENTION_SPEEDUP))
        if keys == "4096" and queries == "32":
            roof = max(float(triton_row["frac_measured_copy"]), float(triton_row["frac_bf16_matmul"]))
            out.append(Verdict("attention fraction of roofline", workload, roof, ATTENTION_ROOF))
    return out


def elementwise_verdicts(name: str, rows: list[dict]) -> list[Verdict]:
    triton_rows = sorted((r for r in rows if r["impl"] == "triton"), key=lambda r: int(r["rows"]))
    return [
        Verdict(
            f"{name} fraction of copy bandwidth",
            f"{r['rows']} rows",
            float(r["frac_measured_copy"]),
            ELEMENTWISE_COPY,
            judged=r is triton_rows[-1],
        )
        for r in triton_rows
    ]


def sampling_verdicts(rows: list[dict]) -> list[Verdict]:
    pairs: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        pairs.setdefault((row["rows"], row["mode"]), {})[row["impl"]] = row
    out = []
    for (num_rows, mode), pair in pairs.items():
        fused, ref = pair.get("triton_fused"), pair.get("llada_float64")
        if fused is None or ref is None:
            continue
        workload = f"{num_rows} rows, {mode}"
        out.append(
            Verdict(
                "sampling head speed vs float64 (x)",
                workload,
                float(ref["ms"]) / float(fused["ms"]),
                SAMPLING_SPEEDUP,
            )
        )
        fused_mem = float(fused["peak_extra_MiB"])
        memory = float(ref["peak_extra_MiB"]) / fused_mem if fused_mem > 0 else float("inf")
        out.append(Verdict("sampling head memory vs float64 (x less)", workload, memory, SAMPLING_MEMORY))
    return out


def moe_verdicts(rows: list[dict]) -> list[Verdict]:
    """Per token count: the grouped kernels' speed against the torch loop (judged at 256 tokens) and
    against the dense matmul of the same FLOPs (judged at the most tokens)."""
    by_tokens: dict[int, dict[str, dict]] = {}
    for row in rows:
        by_tokens.setdefault(int(row["tokens"]), {})[row["impl"]] = row
    judged_at = {"torch_loop": 256, "dense_same_flops": max(by_tokens, default=0)}
    goals = {
        "torch_loop": ("moe speed vs torch loop over experts (x)", MOE_VS_LOOP),
        "dense_same_flops": ("moe speed vs dense matmul of the same FLOPs (x)", MOE_VS_DENSE),
    }
    out = []
    for tokens, impls in sorted(by_tokens.items()):
        if "triton_grouped" not in impls:
            continue
        for impl, (goal, target) in goals.items():
            if impl in impls:
                speed = float(impls[impl]["ms"]) / float(impls["triton_grouped"]["ms"])
                out.append(Verdict(goal, f"{tokens} tokens", speed, target, judged=tokens == judged_at[impl]))
    return out


def judge(folder: Path) -> list[Verdict]:
    return (
        attention_verdicts(read_rows(folder / "bench_attention.csv"))
        + elementwise_verdicts("rms_norm", read_rows(folder / "bench_rms_norm.csv"))
        + elementwise_verdicts("swiglu", read_rows(folder / "bench_swiglu.csv"))
        + sampling_verdicts(read_rows(folder / "bench_sampling_head.csv"))
        + moe_verdicts(read_rows(folder / "bench_moe.csv"))
    )


def to_markdown(verdicts: list[Verdict], device: str) -> str:
    judged = [v for v in verdicts if v.judged]
    lines = [
        "### Kernel goals",
        "",
        f"On {device}: {sum(v.met for v in judged)} of {len(judged)} judged figures meet their goal.",
        "",
        "| goal | workload | figure | target | met |",
        "|---|---|---|---|---|",
    ]
    for v in verdicts:
        met = ("yes" if v.met else "NO") if v.judged else "(listed)"
        lines.append(f"| {v.goal} | {v.workload} | {v.figure:.3g} | {v.target:g} | {met} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    folder = Path(argv[0] if argv else os.environ.get("BENCH_OUT") or "benchmarks/scratch")
    text = to_markdown(judge(folder), device_of(folder))
    (folder / "goals.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
