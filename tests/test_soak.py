"""benchmarks/soak.py end to end for a few seconds: a real `dllm serve` with the demo model, 4 clients
of the full mix (chat, mid-stream disconnects, malformed requests), every request accounted for."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_short_soak_accounts_for_every_request(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "soak.py")]
    cmd += ["--minutes", "0.05", "--clients", "4", "--warmup", "1", "--out", str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads((tmp_path / "soak_cpu.json").read_text())
    assert "| lost | 0 |" in (tmp_path / "soak_cpu.md").read_text()

    assert record["lost"] == 0 and record["warmup"]["lost"] == 0
    assert record["sent"] > 0 and record["completed"] > 0
    assert record["sent"] == (
        record["completed"]
        + record["failed_expected_4xx"]
        + record["failed_unexpected"]
        + sum(record["errors"].values())
    )
    assert record["unexpected_5xx"] == 0 and record["errors"] == {}
    # Malformed requests only ever end as 4xx.
    assert all(k.startswith("malformed:") for k in record["failed_expected_by_kind_status"])
    assert all(400 <= int(s) < 500 for s in record["failed_by_status"])
    assert record["chat_latency_p50_s"] <= record["chat_latency_p99_s"]
    assert 0 < record["rss_start_mib"] <= record["rss_max_mib"]
    assert record["rss_end_mib"] <= record["rss_max_mib"]
    end = record["metrics_end"]
    assert end["dllm_kv_cache_pages_in_use"] == 0 and end["dllm_kv_cache_pages_total"] > 0
    assert end["dllm_num_requests_running"] == 0 and end["dllm_num_requests_waiting"] == 0
    assert record["cpu"] and record["passed"] and record["problems"] == []
    assert record["server_exit_status"] == -15  # SIGTERM, after a drain
