"""Offline engine benchmark: generated tokens/s per cache mode and batch size.

    python benchmarks/offline.py                       # random LLaDA-layout model, CPU, one thread
    python benchmarks/offline.py --cache none,prefix,dual --prompt-len 64 --max-tokens 256
    python benchmarks/offline.py --model models/demo   # any checkpoint directory
    python benchmarks/offline.py --family dream        # a tiny random checkpoint of another family
    python benchmarks/offline.py --device cuda --llada-8b --kernels triton --cache none,dual

The default model is a random checkpoint written to a temporary folder and loaded through the
normal path: d_model 256, 4 layers, an embedding and LM head of 32000 rows (--d-model, --n-layers,
--vocab-size), a small BPE tokenizer (ids past it decode to nothing; prompts are token ids).
`--llada-8b` builds LLaDA-8B's shapes with random weights in bf16 on the device instead. `--family
NAME` writes that family's tiny random checkpoint in its release layout (models/writers/NAME.py:
dream, llada_moe, radd, smdm) and loads it through the normal path.

One row per (batch, cache mode): tokens/s, forwards/s, rows per forward, forward positions per
generated token (sum of StepStats.num_tokens / generated tokens), speedup over cache "none" at the
same batch and settings (when "none" ran too), median seconds (the table and speedups:
engine_goals.py, which also judges the GPU goals on these files). At each batch size every mode
warms up (two steps per block: kernels compiled, allocator warm, CUDA graphs captured), then
`--repeats` rounds run each mode once, interleaved (`--cuda-graphs compare`: each mode with the
engine's CUDA graphs off and on, rows "dual" and "dual+graphs"). Results go to
OUT/offline_<cpu|gpu>_<kernels>[_llada8b][_<model>][_<tag>].{md,json}, the device named in both,
rewritten after every batch size so that a run cut short keeps the rest.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from bench_out import add_out_argument  # noqa: E402
from engine_goals import add_speedups, format_rows  # noqa: E402

from engine import LLM, SamplingParams  # noqa: E402
from engine.sampling_params import CACHE_MODES  # noqa: E402

CORPUS = ["the quick brown fox jumps over the lazy dog 0123456789"] * 50

LLADA_8B = dict(
    d_model=4096,
    n_heads=32,
    n_kv_heads=32,
    n_layers=32,
    mlp_hidden_size=12288,
    vocab_size=126464,
    mask_token_id=126336,
    eos_token_id=126081,
    max_sequence_length=4096,
)


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Matrices ~ N(0, 0.02^2), norm weights 1: activations of a trained model's scale."""
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            gen = torch.Generator(device=p.device).manual_seed(seed + i)
            p.normal_(0.0, 0.02, generator=gen) if p.dim() > 1 else p.fill_(1.0)
    model.requires_grad_(False).eval()


def random_checkpoint(
    out_dir: Path, d_model: int = 256, n_layers: int = 4, vocab_size: int | None = None
) -> Path:
    """A random LLaDA-layout checkpoint (head_dim 32, MLP 3 * d_model, as LLaDA-8B) with a small BPE
    tokenizer; `vocab_size` rows of embedding and LM head (None: as many as the tokenizer has)."""
    from models.checkpoint_writer import build_tokenizer, llada_config_dict, save_llada_checkpoint
    from models.config import LLaDAConfig
    from models.llada import LLaDAModel

    tok = build_tokenizer(CORPUS, 512)
    mask_id, eos_id = tok.convert_tokens_to_ids(["<|mdm_mask|>", "<|endoftext|>"])
    heads = max(d_model // 32, 1)
    cfg = llada_config_dict(
        d_model=d_model,
        n_heads=heads,
        n_kv_heads=heads,
        n_layers=n_layers,
        mlp_hidden_size=3 * d_model,
        vocab_size=max(vocab_size or 0, len(tok)),
        mask_token_id=mask_id,
        eos_token_id=eos_id,
        max_sequence_length=2048,
    )
    model = LLaDAModel(LLaDAConfig.from_dict(cfg))
    randomize(model)
    save_llada_checkpoint(model.state_dict(), cfg, out_dir)
    tok.save_pretrained(str(out_dir))
    return Path(out_dir)


def tiny_model(out_dir: Path) -> Path:
    """d_model 256, 4 layers, the tokenizer's vocabulary (benchmarks/serving.py's model)."""
    return random_checkpoint(out_dir)


def random_llada_8b(device: str, dtype: torch.dtype):
    """LLaDA-8B's exact shapes with random weights, built on the device (no checkpoint on disk)."""
    from models.checkpoint_writer import llada_config_dict
    from models.config import LLaDAConfig
    from models.llada import LLaDAModel
    from models.registry import LoadedModel

    cfg = LLaDAConfig.from_dict(llada_config_dict(**LLADA_8B))
    with torch.device(device):
        model = LLaDAModel(cfg).to(dtype)
    randomize(model)
    return LoadedModel(
        path=Path("random-llada-8b"),
        config=cfg,
        model=model,
        tokenizer=None,
        device=torch.device(device),
        dtype=dtype,
        spec=replace(cfg.model_spec(), stop_token_ids=(cfg.eos_token_id,)),
    )


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def sampling_params(
    max_tokens: int, block_length: int, tokens_per_step: int, cache: str, steps: int | None = None
) -> SamplingParams:
    return SamplingParams(
        max_tokens=max_tokens,
        steps=steps or max(max_tokens // tokens_per_step, 1),
        block_length=block_length,
        temperature=0.0,
        ignore_eos=True,
        cache=cache,
        sampler="exact",  # the fixed schedule in every family (RADD and Dream default to continuous)
    )


def timed_generate(llm: LLM, prompts: list[list[int]], params: SamplingParams) -> tuple[float, int]:
    """Seconds and generated tokens of one generate call (the device synchronised around it)."""
    cuda = llm.engine.loaded.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    outs = llm.generate(prompt_token_ids=prompts, sampling_params=params)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, sum(len(o.token_ids) for o in outs)


def measure_batch(llm: LLM, batch: int, args: argparse.Namespace) -> list[dict]:
    """Every cache mode at one batch size: a warm-up each, then `args.repeats` rounds of
    one run per mode (interleaved, so that a drifting load on the machine hits every mode alike);
    each mode's row reports its median time."""
    prompts = prompt_ids(batch, args.prompt_len, llm.engine.spec)
    tps = args.tokens_per_step
    steps = []
    llm.engine.step_listeners[:] = [steps.append]
    runner = llm.engine.runner
    graphs = runner.graphs  # the engine's, switched off for the "off" runs of --cuda-graphs compare
    variants = [
        (cache, on)
        for cache in args.caches
        for on in ((False, True) if args.cuda_graphs == "compare" else (graphs is not None,))
    ]
    # Warm-up: the whole length at two steps per block (the block-entry refresh, then one block step),
    # so the CUDA graphs of the run's shapes (rows, block, page-table width) are captured before timing.
    num_blocks = -(-args.max_tokens // args.block_length)
    warm_steps = min(2 * num_blocks, args.max_tokens)
    for cache, on in variants:
        runner.graphs = graphs if on else None
        warm = sampling_params(args.max_tokens, args.block_length, tps, cache, steps=warm_steps)
        timed_generate(llm, prompts, warm)
    times = {v: [] for v in variants}
    runs = {}
    for _ in range(args.repeats):
        for cache, on in variants:
            runner.graphs = graphs if on else None
            steps.clear()
            params = sampling_params(args.max_tokens, args.block_length, tps, cache)
            seconds, tokens = timed_generate(llm, prompts, params)
            times[cache, on].append(seconds)
            runs[cache, on] = (tokens, list(steps))
    runner.graphs = graphs
    return [
        result_row(llm, batch, cache, on, times[cache, on], *runs[cache, on], args) for cache, on in variants
    ]


def prompt_ids(batch: int, length: int, spec) -> list[list[int]]:
    """Distinct token-id prompts inside the vocabulary, never the mask id."""
    span = min(200, spec.vocab_size - 11)
    ids = [[(7 * i + j) % span + 10 for j in range(length)] for i in range(batch)]
    return [[t + 1 if t == spec.mask_token_id else t for t in row] for row in ids]


def result_row(
    llm: LLM, batch: int, cache: str, graphs: bool, times: list[float], tokens: int, steps, args
) -> dict:
    t = statistics.median(times)
    forwards = [s for s in steps if s.num_rows]
    positions = sum(s.num_tokens for s in steps)
    return {
        "cache": cache,
        "cuda_graphs": graphs and cache != "none",  # exact steps never take a graph
        "batch": batch,
        "tokens_per_step": args.tokens_per_step,
        "prompt_len": args.prompt_len,
        "max_tokens": args.max_tokens,
        "block_length": args.block_length,
        "kernels": llm.engine.ops.name,
        "seconds": t,
        "all_seconds": times,
        "generated_tokens": tokens,
        "forward_passes": len(forwards),
        "forward_positions": positions,
        "positions_per_token": positions / max(tokens, 1),
        "tokens_per_s": tokens / t,
        "forwards_per_s": len(forwards) / t,
        "mean_rows_per_forward": sum(s.num_rows for s in forwards) / max(len(forwards), 1),
    }


def parse_args(argv) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint directory (default: a random model)")
    ap.add_argument("--llada-8b", action="store_true", help="random weights at LLaDA-8B shapes, bf16 (GPU)")
    ap.add_argument("--family", default=None, choices=FAMILIES, help="tiny random checkpoint of a family")
    ap.add_argument("--d-model", type=int, default=256, help="random model: width")
    ap.add_argument("--n-layers", type=int, default=4, help="random model: layers")
    ap.add_argument("--vocab-size", type=int, default=32000, help="random model: embedding/LM-head rows")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--kernels", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 on the CPU)")
    ap.add_argument("--cache", default="none", help=f"comma list from {', '.join(CACHE_MODES)}")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--tokens-per-step", type=int, default=1, help="steps = max_tokens / this")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tag", default="", help="appended to the result file names")
    ap.add_argument(
        "--cuda-graphs",
        default="auto",
        choices=["auto", "on", "off", "compare"],
        help="the engine's CUDA graphs; compare: every cache mode with graphs off and on, interleaved",
    )
    add_out_argument(ap)
    args = ap.parse_args(argv)
    args.caches = [c for c in args.cache.split(",") if c]
    bad = [c for c in args.caches if c not in CACHE_MODES]
    if bad or not args.caches:
        ap.error(f"--cache: {', '.join(bad) or 'empty'}; choose from {', '.join(CACHE_MODES)}")
    if args.cuda_graphs in ("on", "compare") and not args.device.startswith("cuda"):
        ap.error(f"--cuda-graphs {args.cuda_graphs} needs --device cuda")
    if args.tokens_per_step < 1 or args.max_tokens % args.tokens_per_step:
        ap.error("--max-tokens must be a multiple of --tokens-per-step")
    if args.block_length > args.max_tokens or args.block_length % args.tokens_per_step:
        ap.error("--block-length must be at most --max-tokens and a multiple of --tokens-per-step")
    return args


FAMILIES = ("dream", "llada_moe", "radd", "smdm")


def load(args: argparse.Namespace, tmp: Path) -> tuple:
    """What LLM() takes: a LoadedModel (--llada-8b) or a checkpoint path; and a tokenizer dir or None."""
    if args.llada_8b:
        return random_llada_8b(args.device, torch.bfloat16), None
    if args.model:
        return args.model, None
    if args.family:
        writer = importlib.import_module(f"models.writers.{args.family}")
        path = writer.write_tiny_checkpoint(tmp / args.family)
        return path, writer.tokenizer_dir(path) if hasattr(writer, "tokenizer_dir") else None
    return random_checkpoint(tmp, args.d_model, args.n_layers, args.vocab_size), None


def describe(args: argparse.Namespace, llm: LLM) -> tuple[str, str]:
    """(file name stem, table header) of this run."""
    if args.llada_8b:
        what = "random LLaDA-8B shapes, bf16"
    elif args.family:
        spec = llm.engine.spec
        what = (
            f"tiny random {args.family} checkpoint ({spec.n_layers} layers, {spec.n_kv_heads} kv heads of "
            f"{spec.head_dim}, vocab {spec.vocab_size})"
        )
    elif args.model:
        what = args.model
    else:
        cfg = llm.engine.model_config
        what = f"random model (d {cfg.d_model}, {cfg.n_layers} layers, vocab {cfg.embedding_size})"
    header = (
        f"Offline engine, {what}, device: {device_name(args.device)}, kernels: {llm.engine.ops.name}, "
        f"prompt {args.prompt_len}, max_tokens {args.max_tokens}, block {args.block_length}, "
        f"{args.tokens_per_step} token(s) per step, {args.repeats} repeat(s)"
    )
    tag = "gpu" if args.device.startswith("cuda") else "cpu"
    name = f"offline_{tag}_{llm.engine.ops.name}" + ("_llada8b" if args.llada_8b else "")
    if args.model:
        name += "_" + Path(args.model).name
    if args.family:
        name += "_" + args.family
    if args.tag:
        name += "_" + args.tag
    return name, header


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = args.threads or (None if args.device.startswith("cuda") else 1)
    if threads:
        torch.set_num_threads(threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer = load(args, Path(tmp))
        graphs = "on" if args.cuda_graphs == "compare" else args.cuda_graphs
        llm = LLM(model, tokenizer=tokenizer, device=args.device, kernels=args.kernels, cuda_graphs=graphs)
        name, header = describe(args, llm)
        results = []
        for batch in (int(b) for b in args.batches.split(",")):
            results += measure_batch(llm, batch, args)
            add_speedups(results)
            table = "\n".join([header, "", *format_rows(results)])
            (out / f"{name}.md").write_text(table + "\n")
            record = {"device": device_name(args.device), "header": header, "results": results}
            (out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
