"""benchmarks/offline.py end to end on a tiny random model: every cache mode, a row each, sane figures."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
