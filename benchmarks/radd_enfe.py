"""RADD's sampler cost: forward passes per sequence (NFE) against steps, measured and expected.

    python benchmarks/radd_enfe.py                              # L = 1024, steps 16..4096, CPU
    python benchmarks/radd_enfe.py --out benchmarks/results     # update the committed figures
    python benchmarks/radd_enfe.py --length 128 --steps 8,64,512 --num-seqs 8 --no-plot

The engine's continuous sampler (`SamplingParams(sampler="continuous")`, RADD's Euler / Tweedie
sampler under the log-linear schedule) runs a tiny random RADD checkpoint (models/writers/radd.py)
through the normal loading path: a one-token prompt, then L masked positions in one block, S steps.
The weights do not matter: which positions are revealed when is drawn independently of them.

Expected NFE (derived here). At step k = 0 .. S-1 (time t = 1 - k/S to s = t - 1/S) each masked
position is revealed with probability p_k = 1 - s/t = 1/(S - k); all remaining ones at the last step.
So a position's reveal step is uniform on {0 .. S-1}: P(step k) = prod_{j<k} (1 - p_j) * p_k
= (S - k)/S * 1/(S - k) = 1/S, independently across the L positions. The network has no time input,
so a forward is needed only on a canvas it has not seen: at step 0, and at step k > 0 when step k-1
revealed something and masks remain; every other step reuses the last output exactly. Counting each
forward against the revealing step before it, NFE = D, the number of distinct steps at which at
least one position is revealed (the last revealing step empties the canvas and needs no forward
after it, which the forward at step 0 makes up for). Hence

    E-NFE = sum_k P(step k reveals something) = S * (1 - (1 - 1/S)^L)

(-> S for S << L: every step reveals something; -> L for S >> L: one forward per token at most),
and with a = (1 - 1/S)^L, b = (1 - 2/S)^L: Var(NFE) = S(1 - a)a + S(S - 1)(b - a^2). RADD's own
sampler (t from 1 to eps = 1e-5, rate dt/t under the log-linear schedule, everything left at the
last step) reveals each position at step k with probability (1 - eps)/S, the last step taking the
eps left over: the same curve up to terms of order eps.

Records per S: every sequence's NFE (RequestOutput.num_forward_passes), their mean and standard
deviation, E-NFE and its standard deviation, the z-score of the mean, the steps the engine ran and
the wall time; the run fails (exit 1) when a mean is more than 4 standard errors from E-NFE. Writes
OUT/radd_enfe.{json,md} with the device name and, unless --no-plot, OUT/radd_enfe.png (matplotlib:
`pip install -e ".[bench]"`).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from bench_out import add_out_argument  # noqa: E402

from engine import LLM, SamplingParams  # noqa: E402
from models.writers.radd import tokenizer_dir, write_tiny_checkpoint  # noqa: E402

DEFAULT_STEPS = "16,32,64,128,256,512,1024,2048,4096"
MAX_Z = 4.0  # |mean - E-NFE| / standard error above this fails the run


def expected_nfe(steps: int, length: int) -> float:
    """E-NFE = S (1 - (1 - 1/S)^L) (module docstring)."""
    return steps * (1.0 - (1.0 - 1.0 / steps) ** length)


def nfe_std(steps: int, length: int) -> float:
    """Standard deviation of one sequence's NFE: the count of non-empty steps among S when L
    positions pick their reveal step uniformly."""
    a = (1.0 - 1.0 / steps) ** length
    b = (1.0 - 2.0 / steps) ** length
    var = steps * (1.0 - a) * a + steps * (steps - 1) * (b - a * a)
    return math.sqrt(max(var, 0.0))


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def measure(llm: LLM, prompt: list[int], length: int, steps: int, num_seqs: int, seed: int) -> dict:
    """`num_seqs` sequences of L tokens in S steps, denoising together; one row of the figures."""
    params = [
        SamplingParams(
            max_tokens=length,
            steps=steps,
            block_length=length,
            sampler="continuous",
            temperature=1.0,
            seed=seed + i,
        )
        for i in range(num_seqs)
    ]
    start = time.perf_counter()
    outs = llm.generate(prompt_token_ids=[prompt] * num_seqs, sampling_params=params)
    wall = time.perf_counter() - start
    nfe = [o.num_forward_passes for o in outs]
    mean = sum(nfe) / len(nfe)
    sd = math.sqrt(sum((x - mean) ** 2 for x in nfe) / max(len(nfe) - 1, 1))
    expected, expected_sd = expected_nfe(steps, length), nfe_std(steps, length)
    stderr = expected_sd / math.sqrt(num_seqs)
    z = (mean - expected) / stderr if stderr > 0 else (0.0 if mean == expected else math.inf)
    return {
        "steps": steps,
        "nfe": nfe,
        "mean_nfe": mean,
        "std_nfe": sd,
        "expected_nfe": expected,
        "expected_std": expected_sd,
        "z": z,
        "agrees": abs(z) <= MAX_Z,
        "mean_steps_run": sum(o.num_steps for o in outs) / len(outs),
        "wall_s": wall,
    }


def write_tables(out: Path, record: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "radd_enfe.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        f"# RADD E-NFE: {record['header']}",
        "",
        "| steps | measured NFE (mean ± sd) | E-NFE ± sd | z | agrees | steps run | NFE / steps | wall s |",
        "|---:|---:|---:|---:|:---:|---:|---:|---:|",
    ]
    for r in record["results"]:
        lines.append(
            f"| {r['steps']} | {r['mean_nfe']:.1f} ± {r['std_nfe']:.1f} | {r['expected_nfe']:.1f} ± "
            f"{r['expected_std']:.1f} | {r['z']:+.2f} | {'yes' if r['agrees'] else 'NO'} | "
            f"{r['mean_steps_run']:.0f} | {r['mean_nfe'] / r['steps']:.3f} | {r['wall_s']:.1f} |"
        )
    lines += ["", record["formula"], ""]
    (out / "radd_enfe.md").write_text("\n".join(lines))


def plot(out: Path, record: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    length, rows = record["length"], record["results"]
    steps = [r["steps"] for r in rows]
    lo, hi = int(8 * math.log2(min(steps))), math.ceil(8 * math.log2(max(steps)))
    grid = sorted({round(2 ** (e / 8)) for e in range(lo, hi + 1)})
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.plot(grid, grid, ":", color="grey", label="NFE = steps (no reuse)")
    ax.axhline(length, ls="--", color="grey", lw=0.8, label=f"L = {length}")
    ax.plot(grid, [expected_nfe(s, length) for s in grid], "-", label="E-NFE = S(1 - (1 - 1/S)^L)")
    ax.errorbar(
        steps,
        [r["mean_nfe"] for r in rows],
        yerr=[r["std_nfe"] for r in rows],
        fmt="o",
        capsize=3,
        label=f"measured (mean ± sd of {record['num_seqs']} sequences)",
    )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("sampling steps S")
    ax.set_ylabel("forward passes per sequence (NFE)")
    ax.set_title(f"RADD continuous sampler with exact reuse, L = {length}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.text(0.01, 0.01, record["device"], fontsize=7, color="grey")
    fig.tight_layout()
    fig.savefig(out / "radd_enfe.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=1024, help="generated tokens L (one block)")
    parser.add_argument("--steps", default=DEFAULT_STEPS, help="comma-separated step counts S")
    parser.add_argument("--num-seqs", type=int, default=4, help="sequences per step count")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-plot", action="store_true", help="tables only (no matplotlib)")
    add_out_argument(parser)
    args = parser.parse_args(argv)
    steps_list = [int(s) for s in args.steps.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        # the canvas: one prompt token and L masks, within the model's length
        model_dir = write_tiny_checkpoint(Path(tmp), length=args.length + 1)
        llm = LLM(
            str(model_dir), tokenizer=str(tokenizer_dir(model_dir)), dtype="float32", device=args.device
        )
    prompt = [llm.engine.spec.eos_token_id]  # GPT-2's <|endoftext|>, the usual start of a sample
    record = {
        "header": f"tiny random RADD (hidden 64, 2 blocks), L = {args.length}, "
        f"{args.num_seqs} sequences per step count, device: {device_name(args.device)}",
        "device": device_name(args.device),
        "length": args.length,
        "num_seqs": args.num_seqs,
        "formula": "E-NFE = S (1 - (1 - 1/S)^L): each position's reveal step is uniform on 0..S-1; "
        "NFE = the number of steps that reveal something (benchmarks/radd_enfe.py).",
        "results": [],
    }
    out = Path(args.out)
    for steps in steps_list:
        row = measure(llm, prompt, args.length, steps, args.num_seqs, args.seed + 1000 * steps)
        record["results"].append(row)
        print(
            f"S={steps:5d}  NFE {row['mean_nfe']:7.1f} ± {row['std_nfe']:5.1f}  "
            f"E-NFE {row['expected_nfe']:7.1f} ± {row['expected_std']:5.1f}  z {row['z']:+.2f}  "
            f"{row['wall_s']:.1f}s",
            flush=True,
        )
        write_tables(out, record)  # after every S, so a run cut short keeps the rest
    if not args.no_plot:
        plot(out, record)
    bad = [r["steps"] for r in record["results"] if not r["agrees"]]
    if bad:
        print(f"measured NFE disagrees with E-NFE (|z| > {MAX_Z}) at steps {bad}", file=sys.stderr)
        return 1
    print(f"measured NFE agrees with E-NFE at every step count; tables in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
