"""`dllm eval`: exact-match accuracy of the demo tasks for each sampler mode the engine has.

For every mode, all held-out prompts (never seen in training, see models/demo_tasks.py) run as one
batch through LLM.chat at temperature 0; the table reports exact match per task, forward passes per
generated token (NFE/token) and generated tokens per second. The exact mode is the reference against
which the fast modes' quality is compared.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from engine.cli import add_engine_arguments, engine_kwargs
from engine.sampling_params import SamplingParams
from models.demo_tasks import TASKS, heldout_examples, is_correct

# Mode name -> the SamplingParams overrides it stands for (the rest: the checkpoint's defaults).
MODES = {
    "exact": {},
    "exact-half-steps": {"steps": "half"},
    "exact-block-8": {"block_length": 8},  # semi-AR blocks: early stop skips blocks after EOS
    "continuous": {"sampler": "continuous"},
    "threshold-0.9": {"threshold": 0.9},
    "factor-1.0": {"factor": 1.0},
}


def main_modes() -> list[str]:
    """Mode names in report order; the first is the exact reference mode."""
    return list(MODES)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_engine_arguments(parser)
    parser.add_argument("--num-prompts", type=int, default=100, help="held-out prompts per task")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {', '.join(MODES)}")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the held-out prompt draw")
    parser.add_argument("--out", default=None, help="also write the table (.md) and figures (.json) here")


def mode_params(mode: str, defaults: dict) -> SamplingParams:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    overrides = dict(MODES[mode])
    if overrides.get("steps") == "half":
        base = SamplingParams(temperature=0.0).resolve(defaults)
        overrides["steps"] = max(base.max_tokens // 2, base.num_blocks)
    return SamplingParams(temperature=0.0, seed=0, **overrides)


def evaluate(llm, tasks: list[str], modes: list[str], num_prompts: int, seed: int) -> list[dict]:
    examples = [ex for task in tasks for ex in heldout_examples(task, num_prompts, seed)]
    rows = []
    for mode in modes:
        params = mode_params(mode, llm.engine.default_params)
        start = time.perf_counter()
        outs = llm.chat([ex.messages() for ex in examples], params)
        seconds = time.perf_counter() - start
        tokens = sum(len(o.token_ids) for o in outs)
        nfe = sum(o.num_forward_passes for o in outs)
        row = {
            "mode": mode,
            "seconds": seconds,
            "generated_tokens": tokens,
            "forward_passes": nfe,
            "nfe_per_token": nfe / max(tokens, 1),
            "tokens_per_s": tokens / seconds,
        }
        for task in tasks:
            pairs = [(ex, o) for ex, o in zip(examples, outs, strict=True) if ex.task == task]
            row[task] = sum(is_correct(ex, o.text) for ex, o in pairs) / len(pairs)
        rows.append(row)
    return rows


def format_table(rows: list[dict], tasks: list[str]) -> str:
    head = "| mode | " + " | ".join(tasks) + " | NFE/token | tokens/s |"
    lines = [head, "|" + "---|" * (len(tasks) + 3)]
    for r in rows:
        acc = " | ".join(f"{100 * r[t]:.1f}%" for t in tasks)
        lines.append(f"| {r['mode']} | {acc} | {r['nfe_per_token']:.2f} | {r['tokens_per_s']:.1f} |")
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
    llm = LLM(args.model, **engine_kwargs(args))
    rows = evaluate(llm, tasks, modes, args.num_prompts, args.seed)
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
