"""Where the benchmarks write their tables: `$BENCH_OUT`, else benchmarks/scratch (git-ignored).

benchmarks/results holds the committed figures: pass `--out benchmarks/results` (or set BENCH_OUT)
to update them. The scripts run as `python benchmarks/NAME.py`, so this folder is on their path.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

SCRATCH = Path(__file__).resolve().parent / "scratch"


def default_out() -> str:
    return os.environ.get("BENCH_OUT") or str(SCRATCH)


def add_out_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        default=default_out(),
        help="results folder (default $BENCH_OUT, else benchmarks/scratch; benchmarks/results holds the "
        "committed figures: pass it to update them)",
    )
