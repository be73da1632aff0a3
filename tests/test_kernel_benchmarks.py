"""The kernel benchmarks run end to end in smoke mode (tiny shapes, Triton interpreted on the CPU) and
write tables that benchmarks/kernels/goals.py reads: what a GPU run will do, minus the figures."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "kernels"
RUNS = [
    ("bench_attention.py",),
    ("bench_attention.py", "--sweep"),
    ("bench_sampling_head.py",),
    ("bench_rms_norm.py",),
    ("bench_swiglu.py",),
    ("bench_rotary.py",),
    ("bench_moe.py",),
]


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "BENCH_NO_COMPILE")}
    env.update(BENCH_SMOKE="1", TRITON_INTERPRET="1", BENCH_OUT=str(folder), PYTHONPATH=str(ROOT))
    for script, *args in RUNS:
        proc = subprocess.run(
            [sys.executable, str(BENCH / script), *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, f"{script} {args}: {proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        assert "failed" not in proc.stdout, f"{script} {args}: {proc.stdout[-3000:]}"
    return folder


def rows_of(folder: Path, name: str) -> list[dict]:
    with open(folder / f"{name}.csv", newline="") as f:
        header = f.readline()
        assert header.startswith(f"# {name} on cpu"), header
        return list(csv.DictReader(f))


def impls(rows: list[dict]) -> set[str]:
    return {r["impl"] for r in rows}


def test_every_benchmark_writes_its_rows(smoke_results):
    attention = rows_of(smoke_results, "bench_attention")
    names = impls(attention)
    assert {"triton_varlen", "triton_varlen[no split]"} <= names and any("splits]" in n for n in names)
    assert any(n.startswith("sdpa_padded[") for n in names)  # the baseline ran on this workload too
    assert {r["keys"] for r in attention} >= {"9", "1100", "mixed 9..1100", "canvas 40"}
    paged = rows_of(smoke_results, "bench_attention_paged")  # paged kernel, contiguous kernel, SDPA
    assert {
        "triton_paged",
        "triton_paged[2 splits]",
        "triton_paged[no split]",
        "triton_varlen[2 splits]",
    } <= impls(paged)
    assert any(n.startswith("sdpa_padded[") for n in impls(paged))
    assert {(r["batch"], r["keys"], r["page_size"]) for r in paged} == {
        (b, k, "16") for b in ("1", "3") for k in ("9", "1100")
    }
    sweep = impls(rows_of(smoke_results, "bench_attention_sweep"))
    assert sum(n.startswith("triton m") for n in sweep) == 8 + 5 and any("(default)" in n for n in sweep)
    head = rows_of(smoke_results, "bench_sampling_head")
    assert impls(head) == {"triton_fused", "triton_fused[no split]", "llada_float64"}
    assert {r["splits"] for r in head if r["impl"] == "triton_fused"} == {"2"}
    for name in ("bench_rms_norm", "bench_swiglu", "bench_rotary"):
        assert impls(rows_of(smoke_results, name)) == {"triton", "torch_eager"}
    moe = rows_of(smoke_results, "bench_moe")
    assert {(r["tokens"], r["impl"]) for r in moe} == {
        (t, i) for t in ("1", "7") for i in ("triton_grouped", "torch_loop", "dense_same_flops")
    }
    for name in (
        "bench_attention",
        "bench_attention_paged",
        "bench_sampling_head",
        "bench_rms_norm",
        "bench_swiglu",
        "bench_rotary",
        "bench_moe",
    ):
        assert all(float(r["ms"]) > 0 for r in rows_of(smoke_results, name))
        assert (smoke_results / f"{name}.md").read_text().startswith(f"### {name}")


def test_goals_read_the_benchmark_tables(smoke_results, bench_goals):
    kinds = {v.goal for v in bench_goals.judge(smoke_results)}
    assert kinds == {
        "attention speed vs SDPA (x)",
        "rms_norm fraction of copy bandwidth",
        "swiglu fraction of copy bandwidth",
        "sampling head speed vs float64 (x)",
        "sampling head memory vs float64 (x less)",
        "moe speed vs torch loop over experts (x)",
        "moe speed vs dense matmul of the same FLOPs (x)",
    }  # no roofline verdict: that goal is for 32 queries against 4096 keys, not the smoke shapes
