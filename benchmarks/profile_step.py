"""Profile of cached engine steps: where a step's time goes, how many kernels it launches, how often it
waits for the device.

    python benchmarks/profile_step.py --device cuda --llada-8b --batch 1 --cache dual   # GPU check
    python benchmarks/profile_step.py --batch 8                                        # CPU, small model

Requests (prompt 64, 256 tokens, blocks of 32, one token per step) run until each has refreshed its
cache on entering the first block; then `--steps` engine steps are profiled with torch.profiler (CPU
and, on CUDA, device activity). Per step it reports: wall time; device kernel time (the sum of the
kernels' durations); launches (cudaLaunchKernel and friends); host-device synchronisations (calls that
wait: aten::_local_scalar_dense behind .item()/.tolist()/int(), cudaStreamSynchronize,
cudaDeviceSynchronize; on the CPU this counts reads of host tensors too); CUDA graph replays
(cudaGraphLaunch: a replayed step's kernels are not launches); copies (cudaMemcpyAsync);
and the number of aten operators. Also the ten
operators with the most host time. Writes OUT/profile_step_<device>_<cache>_b<batch>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from bench_out import add_out_argument  # noqa: E402
from offline import device_name, random_checkpoint, random_llada_8b  # noqa: E402

from engine import LLM, SamplingParams  # noqa: E402

LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")
SYNCS = ("aten::_local_scalar_dense", "cudaStreamSynchronize", "cudaDeviceSynchronize")


def summarize(prof, num_steps: int, wall_s: float, on_cuda: bool) -> dict:
    counts: Counter = Counter()
    kernel_us = 0.0
    for evt in prof.events():
        counts[evt.name] += 1
        if on_cuda and evt.device_type == torch.autograd.DeviceType.CUDA:
            kernel_us += evt.device_time_total if hasattr(evt, "device_time_total") else evt.cuda_time_total
    per = 1.0 / num_steps
    top = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
    return {
        "wall_ms_per_step": wall_s * 1e3 * per,
        "kernel_ms_per_step": kernel_us / 1e3 * per if on_cuda else None,
        "launches_per_step": sum(counts[n] for n in LAUNCHES) * per,
        "graph_replays_per_step": counts["cudaGraphLaunch"] * per,
        "syncs_per_step": sum(counts[n] for n in SYNCS) * per,
        "copies_per_step": counts["cudaMemcpyAsync"] * per,
        "aten_ops_per_step": sum(c for n, c in counts.items() if n.startswith("aten::")) * per,
        "top_host_ops": [
            {
                "name": e.key,
                "calls_per_step": e.count * per,
                "self_cpu_ms_per_step": e.self_cpu_time_total / 1e3 * per,
            }
            for e in top
        ],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--kernels", default="auto")
    ap.add_argument("--llada-8b", action="store_true", help="random weights at LLaDA-8B shapes, bf16")
    ap.add_argument("--cache", default="dual", choices=["none", "prefix", "dual"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5, help="engine steps profiled")
    ap.add_argument("--cuda-graphs", default="auto", choices=["auto", "on", "off"], help="the engine's")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--d-model", type=int, default=256, help="random model: width")
    ap.add_argument("--vocab-size", type=int, default=32000, help="random model: embedding/LM-head rows")
    add_out_argument(ap)
    args = ap.parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    on_cuda = args.device.startswith("cuda")

    with tempfile.TemporaryDirectory() as tmp:
        if args.llada_8b:
            model = random_llada_8b(args.device, torch.bfloat16)
        else:
            model = random_checkpoint(Path(tmp), d_model=args.d_model, vocab_size=args.vocab_size)
        llm = LLM(model, device=args.device, kernels=args.kernels, cuda_graphs=args.cuda_graphs)
        engine = llm.engine
        params = SamplingParams(max_tokens=256, steps=256, block_length=32, cache=args.cache, ignore_eos=True)
        for i in range(args.batch):
            engine.add_request(f"r{i}", [(7 * i + j) % 200 + 10 for j in range(64)], params)
        for _ in range(3):  # admission, the block-entry refresh, one cached step (warm; graphs captured)
            engine.step()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
        with profile(activities=activities) as prof:
            if on_cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(args.steps):
                engine.step()
            if on_cuda:
                torch.cuda.synchronize()
            wall = time.perf_counter() - start
        result = summarize(prof, args.steps, wall, on_cuda)

    dev = device_name(args.device)
    graphs = engine.runner.graphs is not None
    what = (
        "random LLaDA-8B shapes, bf16"
        if args.llada_8b
        else f"random model (d {args.d_model}, 4 layers, vocab {args.vocab_size})"
    )
    header = (
        f"Profile of {args.steps} engine steps ({args.cache} cache, batch {args.batch}, one token per step), "
        f"{what}, device: {dev}, kernels: {engine.ops.name}, CUDA graphs: {graphs}"
    )
    kernel = "n/a" if result["kernel_ms_per_step"] is None else f"{result['kernel_ms_per_step']:.3f}"
    lines = [
        header,
        "",
        "| wall ms/step | kernel ms/step | launches/step | graph replays/step | syncs/step | copies/step "
        "| aten ops/step |",
        "|---|---|---|---|---|---|---|",
        f"| {result['wall_ms_per_step']:.3f} | {kernel} | {result['launches_per_step']:.0f} | "
        f"{result['graph_replays_per_step']:.1f} | "
        f"{result['syncs_per_step']:.1f} | {result['copies_per_step']:.1f} | "
        f"{result['aten_ops_per_step']:.0f} |",
        "",
        "| operator (most host time) | calls/step | self host ms/step |",
        "|---|---|---|",
    ]
    lines += [
        f"| {op['name']} | {op['calls_per_step']:.1f} | {op['self_cpu_ms_per_step']:.3f} |"
        for op in result["top_host_ops"]
    ]
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"profile_step_{'gpu' if on_cuda else 'cpu'}_{args.cache}_b{args.batch}" + (
        "_graphs" if graphs else ""
    )
    (out / f"{name}.md").write_text(table + "\n")
    (out / f"{name}.json").write_text(
        json.dumps({"device": dev, "header": header, **result}, indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
