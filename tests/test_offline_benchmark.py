"""benchmarks/offline.py and benchmarks/profile_step.py end to end on a tiny random model (every
cache mode, a row each, sane figures), and benchmarks/engine_goals.py judging hand-written GPU
results on both sides of each goal."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_profile_step_reports_a_cached_step(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "profile_step.py"),
        *("--d-model", "64", "--vocab-size", "1000", "--batch", "2", "--steps", "2", "--out", str(tmp_path)),
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "profile_step_cpu_dual_b2.json").read_text())
    assert record["wall_ms_per_step"] > 0 and record["aten_ops_per_step"] > 0
    assert record["kernel_ms_per_step"] is None  # no device on the CPU
    assert record["top_host_ops"] and "dual cache, batch 2" in record["header"]


def test_offline_benchmark_measures_every_cache_mode(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "offline.py"),
        *("--d-model", "64", "--n-layers", "2", "--vocab-size", "1000"),
        *("--cache", "none,prefix,dual", "--batches", "1,2", "--prompt-len", "8"),
        *("--max-tokens", "16", "--block-length", "8", "--tokens-per-step", "2", "--repeats", "1"),
        *("--tag", "smoke", "--out", str(tmp_path)),
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "offline_cpu_torch_smoke.json").read_text())
    rows = {(r["batch"], r["cache"]): r for r in record["results"]}
    assert set(rows) == {(b, c) for b in (1, 2) for c in ("none", "prefix", "dual")}
    table = (tmp_path / "offline_cpu_torch_smoke.md").read_text()
    assert "vocab 1000" in table and "2 token(s) per step" in table
    for (batch, cache), r in rows.items():
        assert f"| {batch} | {cache} | 2 |" in table
        assert r["generated_tokens"] == 16 * batch and r["forward_passes"] == 8
    for batch in (1, 2):
        none, prefix, dual = (rows[batch, c] for c in ("none", "prefix", "dual"))
        assert none["positions_per_token"] == (8 + 16) / 2  # the whole canvas every step
        assert dual["positions_per_token"] < prefix["positions_per_token"] < none["positions_per_token"]
        assert none["speedup_vs_none"] == 1.0 and dual["speedup_vs_none"] > 0


def benchmark_module(name: str):
    """benchmarks/<name>.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = sys.modules[name] = importlib.util.module_from_spec(spec)  # dataclasses need it
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def engine_goals():
    return benchmark_module("engine_goals")


def gpu_row(batch, cache, tokens_per_s, tokens_per_step=1, kernels="triton", max_tokens=256, graphs=False):
    """An offline.py row as the GPU run would write it; only the settings and tokens/s matter here."""
    return {
        "cache": cache,
        "cuda_graphs": graphs,
        "batch": batch,
        "tokens_per_step": tokens_per_step,
        "prompt_len": 64,
        "max_tokens": max_tokens,
        "block_length": 32,
        "kernels": kernels,
        "seconds": batch * max_tokens / tokens_per_s,
        "generated_tokens": batch * max_tokens,
        "forward_passes": max_tokens // tokens_per_step,
        "forward_positions": 0,
        "positions_per_token": 0.0,
        "tokens_per_s": tokens_per_s,
        "forwards_per_s": 1.0,
        "mean_rows_per_forward": float(batch),
    }


def write_run(folder: Path, tag: str, rows: list[dict]) -> None:
    record = {"device": "NVIDIA H200", "header": f"made up for a test: {tag}", "results": rows}
    (folder / f"offline_gpu_{tag}.json").write_text(json.dumps(record))


@pytest.mark.parametrize(
    ("batch1", "batch32", "expected"),
    [(130.0, 650.0, ("PASS", "FAIL")), (110.0, 750.0, ("FAIL", "PASS")), (120.0, 700.0, ("PASS", "PASS"))],
)
def test_engine_goals_judged_on_both_sides(tmp_path, engine_goals, batch1, batch32, expected):
    write_run(
        tmp_path,
        "triton_llada8b_cached",
        [
            gpu_row(1, "dual", batch1),
            gpu_row(32, "dual", batch32),
            gpu_row(32, "prefix", 5000.0),  # another cache mode: not judged
            gpu_row(32, "dual", 9000.0, tokens_per_step=4),  # another schedule: not judged
        ],
    )
    write_run(tmp_path, "torch_llada8b", [gpu_row(1, "dual", 9000.0, kernels="torch")])
    rows = [r for run in engine_goals.read_runs(tmp_path) for r in run["results"]]
    # The CUDA-graph goals find no row with graphs.
    assert tuple(engine_goals.verdict(g, rows)[0] for g in engine_goals.GOALS) == (
        *expected,
        "MISSING",
        "MISSING",
    )
    assert engine_goals.verdict(engine_goals.GOALS[0], rows)[1] == batch1


def test_cuda_graph_goals_take_only_rows_with_graphs(tmp_path, engine_goals):
    write_run(
        tmp_path,
        "triton_llada8b_graphs",
        [
            gpu_row(1, "dual", 200.0),
            gpu_row(1, "dual", 240.0, graphs=True),
            gpu_row(1, "dual", 500.0, tokens_per_step=4),
            gpu_row(1, "dual", 790.0, tokens_per_step=4, graphs=True),
        ],
    )
    rows = [r for run in engine_goals.read_runs(tmp_path) for r in run["results"]]
    verdicts = {g.workload: engine_goals.verdict(g, rows) for g in engine_goals.GOALS}
    assert verdicts[
        "batch 1, dual cache, 1 token/step, prompt 64, 256 tokens, block 32, triton, CUDA graphs"
    ] == (
        "PASS",
        240.0,
    )
    graphs4 = "batch 1, dual cache, 4 token/step, prompt 64, 256 tokens, block 32, triton, CUDA graphs"
    assert verdicts[graphs4] == ("FAIL", 790.0)
    # The goal without a graphs condition takes either row, judged on the slowest.
    assert verdicts["batch 1, dual cache, 1 token/step, prompt 64, 256 tokens, block 32, triton"] == (
        "PASS",
        200.0,
    )
    engine_goals.add_speedups(rows)
    assert "| 1 | dual+graphs | 1 | 240.0 |" in "\n".join(engine_goals.format_rows(rows))


def test_engine_goals_report_speedups_across_files_and_missing_rows(tmp_path, engine_goals):
    write_run(tmp_path, "triton_llada8b_exact", [gpu_row(1, "none", 26.0)])
    write_run(tmp_path, "triton_llada8b_cached", [gpu_row(1, "dual", 130.0), gpu_row(8, "dual", 400.0)])
    write_run(tmp_path, "triton_kernels_only", [gpu_row(32, "dual", 900.0)])  # not an llada8b run
    assert engine_goals.main([str(tmp_path)]) == 0
    text = (tmp_path / "engine_goals.md").read_text()
    assert "Device: NVIDIA H200" in text
    assert "| >= 120 tokens/s | batch 1, dual cache, 1 token/step" in text and "| 130.0 | PASS |" in text
    assert "| >= 700 tokens/s | batch 32, dual cache" in text and "| - | MISSING |" in text
    assert "| 1 | dual | 1 | 130.0 | 5.00x |" in text  # over the exact row of the other file
    assert "| 8 | dual | 1 | 400.0 | - |" in text  # no exact row at batch 8


def test_engine_goals_without_results(tmp_path, engine_goals):
    assert engine_goals.main([str(tmp_path)]) == 0
    text = (tmp_path / "engine_goals.md").read_text()
    # The four tokens/s goals and the plain-torch CUDA-graph baseline.
    assert text.count("MISSING") == len(engine_goals.GOALS) + 1 == 5 and "no run found" in text


def test_graph_baseline_runs_and_is_judged(tmp_path, engine_goals):
    """benchmarks/graph_baseline.py on the CPU (a smoke run: nothing captured, the baseline's graphs
    emulated), then the goal's verdict on a made-up GPU record, on both sides of 1.3x."""
    baseline = benchmark_module("graph_baseline")
    assert (
        baseline.main(["--batches", "2", "--max-tokens", "32", "--prompt-len", "8", "--out", str(tmp_path)])
        == 0
    )
    rows = json.loads((tmp_path / "graph_baseline_cpu.json").read_text())["results"]
    assert {r["engine"] for r in rows} == {"engine", "torch+graphs"}
    assert all(r["generated_tokens"] == 2 * 32 for r in rows)
    assert next(r for r in rows if r["engine"] == "torch+graphs")["graph_replays"] > 0
    assert "| 2 |" in (tmp_path / "graph_baseline_cpu.md").read_text()
    for engine_tps, verdict in ((1400.0, "PASS"), (1200.0, "FAIL")):
        results = [
            {"engine": "engine", "batch": 32, "tokens_per_s": engine_tps},
            {"engine": "torch+graphs", "batch": 32, "tokens_per_s": 1000.0},
        ]
        (tmp_path / "graph_baseline_gpu.json").write_text(json.dumps({"results": results}))
        assert engine_goals.baseline_verdict(tmp_path) == (verdict, engine_tps / 1000.0)


def test_dense_paged_attention_matches_the_reference():
    """The baseline's capturable attention against paged_attention_ref on uniform rows (GQA, rows of
    different key counts, page tables wider than the keys)."""
    import torch

    from kernels.attention import paged_attention_ref

    baseline = benchmark_module("graph_baseline")
    gen = torch.Generator().manual_seed(0)
    rows, q_len, heads, kv_heads, dim, page = 3, 5, 4, 2, 8, 4
    k_cache = torch.randn(40 * page, kv_heads, dim, generator=gen)
    v_cache = torch.randn(40 * page, kv_heads, dim, generator=gen)
    q = torch.randn(rows * q_len, heads, dim, generator=gen)
    table = torch.tensor([[3, 7, 1, 0], [9, 2, 5, 6], [11, 12, 0, 0]], dtype=torch.int32)
    kv_lens = torch.tensor([9, 16, 6], dtype=torch.int32)
    cu = torch.arange(0, (rows + 1) * q_len, q_len, dtype=torch.int32)
    want = paged_attention_ref(q, k_cache, v_cache, cu, table, kv_lens, page)
    got = baseline.dense_paged_attention(q, k_cache, v_cache, cu, table, kv_lens, page)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
