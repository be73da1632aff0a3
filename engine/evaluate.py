"""`dllm eval`: exact-match accuracy of the demo tasks for each sampler mode the engine has.

For every mode, all held-out prompts (never seen in training, see models/demo_tasks.py) run as one
batch through LLM.chat at temperature 0; the table reports exact match per task, forward passes per
generated token (NFE/token), forward positions per generated token (positions the model computed:
the sum of StepStats.num_tokens over the mode's run, per generated token), generated tokens per
second, and the largest drop of any task's accuracy below the exact mode (the reference against
which the fast modes' quality is compared), in points.

`--max-tokens 24,64,128,256` runs every mode at each answer length (the canvas grows, the answers
do not: the model must fill the rest with EOS); the default is the checkpoint's own max_tokens.

Every mode names its K/V cache, so the engine's default cache (--cache) does not change what a mode
means. The demo checkpoint's schedule is one block of 24 tokens: there the prefix and dual caches
query the same positions (the block is everything after the prompt), so the "-block-8" modes also
run them on blocks of 8, where they differ.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from engine.cli import add_engine_arguments, apply_threads, engine_kwargs
from engine.sampling_params import SamplingParams
from models.demo_tasks import TASKS, heldout_examples, is_correct

# Mode name -> the SamplingParams overrides it stands for (the rest: the checkpoint's defaults;
# cache: "none" unless named).
MODES = {
    "exact": {},
    "exact-half-steps": {"steps": "half"},
    "exact-block-8": {"block_length": 8},  # semi-AR blocks: early stop skips blocks after EOS
    "continuous": {"sampler": "continuous"},
    "threshold-0.9": {"threshold": 0.9},
    "factor-1.0": {"factor": 1.0},
    # Fast-dLLM's approximate K/V caches, on the fixed schedule and with threshold decoding.
    "prefix": {"cache": "prefix"},
    "prefix-threshold-0.9": {"cache": "prefix", "threshold": 0.9},
    "prefix-block-8": {"cache": "prefix", "block_length": 8},
    "dual": {"cache": "dual"},
    "dual-threshold-0.9": {"cache": "dual", "threshold": 0.9},
    "dual-block-8": {"cache": "dual", "block_length": 8},
}
REFERENCE_MODE = "exact"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_engine_arguments(parser)
    parser.add_argument("--num-prompts", type=int, default=100, help="held-out prompts per task")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {', '.join(MODES)}")
    parser.add_argument(
        "--max-tokens",
        default=None,
        help="comma-separated answer lengths to run every mode at (default: the checkpoint's)",
    )
    parser.add_argument("--seed", type=int, default=1234, help="seed of the held-out prompt draw")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--out", default=None, help="also write the table (.md) and figures (.json) here")


def mode_params(mode: str, defaults: dict, max_tokens: int | None = None) -> SamplingParams:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    overrides = {"cache": "none", **MODES[mode]}
    if overrides.get("steps") == "half":
        base = SamplingParams(temperature=0.0, max_tokens=max_tokens).resolve(defaults)
        overrides["steps"] = max(base.max_tokens // 2, base.num_blocks)
    return SamplingParams(temperature=0.0, seed=0, max_tokens=max_tokens, **overrides)


def evaluate(
    llm,
    tasks: list[str],
    modes: list[str],
    num_prompts: int,
    seed: int,
    progress: bool = False,
    max_tokens: list[int | None] = (None,),
) -> list[dict]:
    """One batch per (answer length, mode); `progress`: a progress bar over each run's steps."""
    examples = [ex for task in tasks for ex in heldout_examples(task, num_prompts, seed)]
    steps = []  # StepStats of the current mode's run
    llm.engine.step_listeners.append(steps.append)
    try:
        rows = []
        for length, mode in ((n, m) for n in max_tokens for m in modes):
            params = mode_params(mode, llm.engine.default_params, length)
            steps.clear()
            start = time.perf_counter()
            outs = llm.chat([ex.messages() for ex in examples], params, use_tqdm=progress)
            seconds = time.perf_counter() - start
            rows.append(result_row(mode, seconds, outs, sum(s.num_tokens for s in steps)))
            rows[-1]["max_tokens"] = params.resolve(llm.engine.default_params).max_tokens
            for task in tasks:
                pairs = [(ex, o) for ex, o in zip(examples, outs, strict=True) if ex.task == task]
                rows[-1][task] = sum(is_correct(ex, o.text) for ex, o in pairs) / len(pairs)
    finally:
        llm.engine.step_listeners.remove(steps.append)
    return rows


def result_row(mode: str, seconds: float, outs, num_positions: int) -> dict:
    tokens = sum(len(o.token_ids) for o in outs)
    nfe = sum(o.num_forward_passes for o in outs)
    return {
        "mode": mode,
        "seconds": seconds,
        "generated_tokens": tokens,
        "forward_passes": nfe,
        "nfe_per_token": nfe / max(tokens, 1),
        "forward_positions": num_positions,
        "positions_per_token": num_positions / max(tokens, 1),
        "tokens_per_s": tokens / seconds,
    }


def largest_drop(row: dict, reference: dict | None, tasks: list[str]) -> float | None:
    """The largest accuracy drop of any task below the reference row, in points (None: no reference)."""
    if reference is None or row is reference:
        return None
    return max(100 * (reference[t] - row[t]) for t in tasks)


def format_table(rows: list[dict], tasks: list[str]) -> str:
    """One line per run; the drop is against the exact mode at the same max_tokens."""
    head = (
        "| max_tokens | mode | " + " | ".join(tasks)
        + " | NFE/token | positions/token | tokens/s | drop vs exact |"
    )
    lines = [head, "|" + "---|" * (len(tasks) + 6)]
    for r in rows:
        reference = next(
            (x for x in rows if x["mode"] == REFERENCE_MODE and x.get("max_tokens") == r.get("max_tokens")),
            None,
        )
        acc = " | ".join(f"{100 * r[t]:.1f}%" for t in tasks)
        drop = largest_drop(r, reference, tasks)
        drop_text = "-" if drop is None else f"{drop:.1f}"
        lines.append(
            f"| {r.get('max_tokens', '-')} | {r['mode']} | {acc} | {r['nfe_per_token']:.2f} | "
            f"{r['positions_per_token']:.1f} | {r['tokens_per_s']:.1f} | {drop_text} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from engine.llm import LLM

    tasks = [t for t in args.tasks.split(",") if t]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        mode_params(m, {})  # fail on a misspelled mode before loading anything
    apply_threads(args)
    llm = LLM(args.model, **engine_kwargs(args))
    lengths = [int(n) for n in args.max_tokens.split(",") if n] if args.max_tokens else [None]
    rows = evaluate(
        llm, tasks, modes, args.num_prompts, args.seed, progress=not args.quiet, max_tokens=lengths
    )
    table = format_table(rows, tasks)
    print(
        f"{args.num_prompts} held-out prompts per task, temperature 0, model "
        f"{llm.engine.loaded.path}, device {llm.engine.loaded.device}"
    )
    print(table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(table + "\n")
        out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0
