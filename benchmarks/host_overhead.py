"""Host overhead of an engine step: wall time per step minus the time spent inside the model's forward.

    python benchmarks/host_overhead.py                       # this checkout
    python benchmarks/host_overhead.py --root /tmp/old --label before   # another checkout (git worktree)

A tiny random LLaDA-layout model on the CPU with one thread, so the forward is short and what is left
is the engine's own work per step: building the batch, guidance, sampling, unmasking, commits and the
scheduler's bookkeeping. Batch sizes 1, 8, 32 and 64; each request: prompt 16, 32 tokens in one block,
one token per step, temperature 0. Several mixes: plain greedy, and a mix of every setting (guidance,
temperature with seeds, threshold, factor, random remasking, the caches). Per configuration the median
over all steps of (step time - forward time) is taken per run, and the best of `--repeats` runs kept;
likewise without the sampling head's own arithmetic (ops.sample_head / ops.max_probability over
every committable position x the vocabulary), which on a GPU is a kernel, not host time.
Prints a table and writes OUT/host_overhead_<label>.{md,json} with the device name.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

from bench_out import add_out_argument  # noqa: E402  (this folder: the script is run by path)

MIXES = ("greedy", "mixed")


def mixed_params(SamplingParams, i: int):
    """Request i of the "mixed" configuration: every setting the engine has, in turn."""
    base = dict(max_tokens=32, block_length=32, steps=32, ignore_eos=True)
    variants = [
        dict(),
        dict(cfg_scale=1.0),
        dict(temperature=0.8, seed=i),
        dict(threshold=0.9),
        dict(factor=1.0),
        dict(remasking="random", seed=i),
        dict(cache="dual"),
        dict(cache="prefix", cfg_scale=0.5),
    ]
    return SamplingParams(**base, **variants[i % len(variants)])


def _timed(fn, times: list[float]):
    def timed(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        times.append(time.perf_counter() - start)
        return out

    return timed


# The sampling head's arithmetic over every committable position x the vocabulary: host time on the
# CPU, but a kernel on a GPU. Whichever of these the measured checkout's op table has.
HEAD_OPS = ("sample_head", "max_probability")


def measure(llm, SamplingParams, batch: int, mix: str, repeats: int) -> dict:
    model = llm.engine.runner.model
    forward_times: list[float] = []
    head_times: list[float] = []
    inner = model.forward
    model.forward = _timed(inner, forward_times)
    ops = llm.engine.runner.post_forward.ops
    for name in HEAD_OPS:
        if hasattr(ops, name):
            setattr(ops, name, _timed(getattr(ops, name), head_times))
    prompts = [[(7 * i + j) % 200 + 10 for j in range(16)] for i in range(batch)]
    if mix == "greedy":
        params = [SamplingParams(max_tokens=32, block_length=32, steps=32, ignore_eos=True)] * batch
    else:
        params = [mixed_params(SamplingParams, i) for i in range(batch)]
    best = best_other = None
    try:
        for _ in range(repeats + 1):  # the first run warms up
            overheads, others = [], []
            engine = llm.engine
            for i, (p, s) in enumerate(zip(prompts, params, strict=True)):
                engine.add_request(f"r{i}", p, s)
            while engine.has_unfinished():
                forward_times.clear()
                head_times.clear()
                start = time.perf_counter()
                engine.step()
                elapsed = time.perf_counter() - start
                overheads.append(elapsed - sum(forward_times))
                others.append(elapsed - sum(forward_times) - sum(head_times))
            value, other = statistics.median(overheads), statistics.median(others)
            best = value if best is None else min(best, value)
            best_other = other if best_other is None else min(best_other, other)
    finally:
        model.forward = inner
        for name in HEAD_OPS:
            ops.__dict__.pop(name, None)
    return {
        "batch": batch,
        "mix": mix,
        "host_ms_per_step": best * 1e3,
        "host_ms_per_step_outside_head": best_other * 1e3,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(HERE), help="checkout whose engine is measured")
    ap.add_argument("--label", default="current", help="names the result files")
    ap.add_argument("--batches", default="1,8,32,64")
    ap.add_argument("--mixes", default=",".join(MIXES))
    ap.add_argument("--repeats", type=int, default=3)
    add_out_argument(ap)
    args = ap.parse_args(argv)

    sys.path.insert(0, str(Path(args.root).resolve()))
    import torch

    torch.set_num_threads(1)
    from engine import LLM, SamplingParams
    from models.checkpoint_writer import write_random_checkpoint

    corpus = ["the quick brown fox jumps over the lazy dog 0123456789"] * 50
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sizes = dict(d_model=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=128)
        ckpt = write_random_checkpoint(Path(tmp), corpus, 320, max_sequence_length=512, **sizes)
        batches = [int(b) for b in args.batches.split(",")]
        llm = LLM(ckpt, device="cpu", dtype="float32", kernels="torch", max_num_seqs=max(batches))
        for mix in args.mixes.split(","):
            if mix not in MIXES:
                raise SystemExit(f"unknown mix {mix!r}: choose from {', '.join(MIXES)}")
            for b in batches:
                row = measure(llm, SamplingParams, b, mix, args.repeats)
                rows.append(row)
                print(
                    f"{args.label}: batch {b} {mix}: {row['host_ms_per_step']:.3f} ms/step "
                    f"({row['host_ms_per_step_outside_head']:.3f} outside the sampling head)",
                    flush=True,
                )

    device = f"CPU {platform.processor() or platform.machine()}, 1 thread"
    lines = [
        f"Host time per engine step (step minus forward), {args.label}, {device}; tiny random model, "
        "prompt 16, 32 tokens in one block, one token per step; median over steps, best of "
        f"{args.repeats} runs",
        "",
        "| mix | " + " | ".join(f"batch {b}" for b in batches) + " |",
        "|---|" + "---|" * len(batches),
    ]
    for mix in args.mixes.split(","):
        cells = [f"{r['host_ms_per_step']:.3f} ms" for r in rows if r["mix"] == mix]
        lines.append(f"| {mix} | " + " | ".join(cells) + " |")
    for mix in args.mixes.split(","):
        cells = [f"{r['host_ms_per_step_outside_head']:.3f} ms" for r in rows if r["mix"] == mix]
        lines.append(f"| {mix}, outside the sampling head | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"host_overhead_{args.label}.md").write_text(table + "\n")
    (out / f"host_overhead_{args.label}.json").write_text(
        json.dumps({"device": device, "label": args.label, "rows": rows}, indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
