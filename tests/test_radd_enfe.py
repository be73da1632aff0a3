"""benchmarks/radd_enfe.py: its closed-form E-NFE and variance against an exact computation of the
engine's reveal-and-reuse process, and the script end to end on a short canvas."""

import importlib.util
import json
import subprocess
import sys
from fractions import Fraction
from math import comb
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def enfe():
    path = ROOT / "benchmarks" / "radd_enfe.py"
    spec = importlib.util.spec_from_file_location("radd_enfe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nfe_moments(steps: int, length: int) -> tuple[Fraction, Fraction]:
    """E[NFE], E[NFE^2] of the process as the engine runs it, by exact enumeration of its states:
    at step k each of the m masks is revealed with probability 1 / (S - k) (engine/unmasking.py);
    a forward runs at step k while masks remain, at k = 0 or when step k - 1 revealed something."""
    states = {(length, True, 0): Fraction(1)}  # (masks left, canvas changed by the last step, NFE)
    for k in range(steps):
        p = Fraction(1, steps - k)
        nxt: dict = {}
        for (m, changed, nfe), prob in states.items():
            if m == 0:
                nxt[(m, False, nfe)] = nxt.get((m, False, nfe), 0) + prob
                continue
            nfe += 1 if changed else 0
            for r in range(m + 1):
                w = prob * comb(m, r) * p**r * (1 - p) ** (m - r)
                if w:
                    key = (m - r, r > 0, nfe)
                    nxt[key] = nxt.get(key, 0) + w
        states = nxt
    assert all(m == 0 for m, _, _ in states)  # the last step reveals every mask left
    mean = sum(prob * nfe for (_, _, nfe), prob in states.items())
    square = sum(prob * nfe * nfe for (_, _, nfe), prob in states.items())
    return mean, square


@pytest.mark.parametrize("steps, length", [(1, 5), (2, 1), (3, 4), (5, 3), (8, 6), (12, 2), (6, 9)])
def test_closed_form_matches_the_engine_process(enfe, steps, length):
    mean, square = nfe_moments(steps, length)
    assert enfe.expected_nfe(steps, length) == pytest.approx(float(mean), rel=1e-12)
    assert enfe.nfe_std(steps, length) ** 2 == pytest.approx(float(square - mean * mean), abs=1e-12)


def test_script_measures_and_agrees(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "radd_enfe.py"),
        *("--length", "16", "--steps", "4,64", "--num-seqs", "6", "--no-plot", "--out", str(tmp_path)),
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "radd_enfe.json").read_text())
    assert record["device"].startswith("CPU") and record["length"] == 16
    small, large = record["results"]
    assert all(n <= 4 for n in small["nfe"])  # at most one forward a step
    assert all(n <= 16 for n in large["nfe"]) and large["mean_steps_run"] > 16  # most steps reused
    assert small["agrees"] and large["agrees"]
    assert "| 64 |" in (tmp_path / "radd_enfe.md").read_text()
