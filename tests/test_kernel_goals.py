"""benchmarks/kernels/goals.py judges the kernel benchmarks' CSVs against the issue's GPU goals.

The CSVs here are written by hand in the benchmarks' format (a '#' header line, then a device column
and the benchmark's columns); the figures are made up to sit on either side of each goal.
"""

import csv
from pathlib import Path

import pytest

DEVICE = "NVIDIA H200"


def write_csv(folder: Path, name: str, rows: list[dict]) -> None:
    with open(folder / f"{name}.csv", "w", newline="") as f:
        f.write(f"# {name} on {DEVICE} | made up for a test\n")
        writer = csv.DictWriter(f, fieldnames=["device", *rows[0]])
        writer.writeheader()
        for row in rows:
            writer.writerow({"device": DEVICE, **row})


def attention_row(batch, keys, impl, ms, copy=0.0, matmul=0.0, queries=32):
    return {
        "batch": batch,
        "queries": queries,
        "keys": keys,
        "impl": impl,
        "ms": ms,
        "frac_measured_copy": copy,
        "frac_bf16_matmul": matmul,
    }


@pytest.fixture
def results(tmp_path):
    write_csv(
        tmp_path,
        "bench_attention",
        [
            attention_row(1, "4096", "triton_varlen[8 splits]", 0.010, copy=0.62, matmul=0.10),
            attention_row(1, "4096", "triton_varlen[no split]", 0.040, copy=0.15),
            attention_row(1, "4096", "sdpa_padded[flash_attention]", 0.020),
            attention_row(64, "4096", "triton_varlen", 0.500, copy=0.41, matmul=0.45),
            attention_row(64, "4096", "sdpa_padded[flash_attention]", 0.550),
            attention_row(8, "canvas 1024", "triton_varlen", 0.3, queries=1024),
            attention_row(8, "canvas 1024", "sdpa_padded[cudnn_attention]", 0.3, queries=1024),
            attention_row(8, "mixed 64..4096", "triton_varlen", 0.1),  # SDPA failed: no baseline
        ],
    )
    rms = [(32, 0.05), (8192, 0.81)]
    write_csv(
        tmp_path,
        "bench_rms_norm",
        [{"rows": r, "impl": "triton", "ms": 1.0, "frac_measured_copy": f} for r, f in rms]
        + [{"rows": 8192, "impl": "torch_eager", "ms": 3.0, "frac_measured_copy": 0.3}],
    )
    write_csv(
        tmp_path,
        "bench_swiglu",
        [
            {"rows": r, "impl": "triton", "ms": 1.0, "frac_measured_copy": f}
            for r, f in ((512, 0.9), (8192, 0.6))
        ],
    )
    write_csv(
        tmp_path,
        "bench_sampling_head",
        [
            {"rows": 256, "mode": "T=0.7", "impl": "triton_fused", "ms": 0.1, "peak_extra_MiB": 0.01},
            {"rows": 256, "mode": "T=0.7", "impl": "llada_float64", "ms": 0.45, "peak_extra_MiB": 700.0},
        ],
    )
    return tmp_path


def test_goals_judged_from_benchmark_csvs(results, bench_goals):
    verdicts = {(v.goal, v.workload): v for v in bench_goals.judge(results)}
    speed = verdicts[("attention speed vs SDPA (x)", "B=1, 32 queries vs 4096 keys")]
    assert speed.figure == pytest.approx(2.0) and speed.met  # the split run, not the unsplit one
    assert not verdicts[("attention speed vs SDPA (x)", "B=64, 32 queries vs 4096 keys")].met  # 1.1x
    assert verdicts[("attention speed vs SDPA (x)", "B=8, 1024 queries vs canvas 1024 keys")].figure == 1.0
    roof = verdicts[("attention fraction of roofline", "B=64, 32 queries vs 4096 keys")]
    assert roof.figure == pytest.approx(0.45) and not roof.met  # the larger of copy and matmul
    assert verdicts[("attention fraction of roofline", "B=1, 32 queries vs 4096 keys")].met
    assert not any(w.startswith("B=8, 32 queries vs mixed") for _, w in verdicts)
    assert not any(g.startswith("attention fraction") and "canvas" in w for g, w in verdicts)

    small, large = (verdicts[("rms_norm fraction of copy bandwidth", f"{r} rows")] for r in (32, 8192))
    assert large.judged and large.met and not small.judged  # only the largest size counts
    assert not verdicts[("swiglu fraction of copy bandwidth", "8192 rows")].met

    fast = verdicts[("sampling head speed vs float64 (x)", "256 rows, T=0.7")]
    lean = verdicts[("sampling head memory vs float64 (x less)", "256 rows, T=0.7")]
    assert fast.figure == pytest.approx(4.5) and not fast.met
    assert lean.figure == pytest.approx(70000) and lean.met


def test_goals_markdown_counts_and_names_the_device(results, bench_goals):
    assert bench_goals.main([str(results)]) == 0
    text = (results / "goals.md").read_text()
    # judged: 3 attention speeds, 2 roof fractions, rms_norm 8192, swiglu 8192, 2 sampling figures
    assert f"On {DEVICE}: 4 of 9 judged figures meet their goal." in text
    assert "| rms_norm fraction of copy bandwidth | 32 rows | 0.05 | 0.7 | (listed) |" in text


def test_goals_without_results(tmp_path, bench_goals):
    assert bench_goals.judge(tmp_path) == []
    assert "0 of 0 judged figures" in bench_goals.to_markdown([], bench_goals.device_of(tmp_path))
