"""The `dllm` command: generate, serve, eval, train-demo.

Each subcommand builds its typed config once from the flags and hands it on; a broken model
directory or a bad flag ends with a one-line message and exit status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from importlib import metadata

from engine.sampling_params import CACHE_MODES, REMASKING, SAMPLERS, SamplingParams


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the CLI's one-line errors (`dllm generate: error: ...`, exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def gib(text: str) -> float:
    """--kv-cache-memory: a finite number of GiB >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a number of GiB >= 0; got {text!r}")
    return value


def package_version() -> str:
    try:
        return metadata.version("dllm-serve")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; got {text!r}")
    return value


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (hyper-threads count once)."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/core_cpus_list") as f:
                cores.add(f.read().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def default_threads() -> int:
    """torch CPU threads when --threads is not given: the physical cores but one, which is left to
    the event loop and the tokenizer threads (at least 1). Measured on the 2-core development CPU
    (README, "CPU threads"): a second thread bought nothing, and only two threads stalled for seconds
    when the machine was busy."""
    return max(1, physical_cores() - 1)


def apply_threads(args: argparse.Namespace) -> int:
    """torch.set_num_threads(--threads); unset: OMP_NUM_THREADS if the environment sets it, else
    default_threads(). Returns the number in force."""
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    elif not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(default_threads())
    return torch.get_num_threads()


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Model and engine flags shared by generate, serve and eval."""
    parser.add_argument(
        "--model",
        default=None,
        help="checkpoint directory, or an SMDM .safetensors file (default: the shipped demo model)",
    )
    parser.add_argument(
        "--tokenizer",
        default=None,
        metavar="DIR",
        help="tokenizer directory, for releases that ship none (RADD: GPT-2, SMDM: TinyLlama; "
        "default: the checkpoint's directory)",
    )
    parser.add_argument(
        "--smdm-size",
        default=None,
        metavar="NAME",
        help="size of a bare SMDM .safetensors file whose name does not say it, e.g. Diff_LLaMA_170M "
        "(default: from the name, mdm-170M-... -> Diff_LLaMA_170M)",
    )
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--kernels",
        default="auto",
        choices=["auto", "triton", "torch"],
        help="auto: Triton kernels on CUDA, torch references on CPU",
    )
    parser.add_argument(
        "--cuda-graphs",
        default="auto",
        choices=["auto", "on", "off"],
        help="replay the dual-cache block step as CUDA graphs (auto: with CUDA and the Triton kernels)",
    )
    parser.add_argument("--max-num-seqs", type=int, default=32, help="requests denoising together")
    parser.add_argument(
        "--max-num-batched-tokens",
        type=int,
        default=None,
        help="canvas positions per forward pass, CFG rows count twice (default: twice the model's "
        "context, at least 65536: one full-context request with CFG fits)",
    )
    parser.add_argument(
        "--cache",
        default=None,
        choices=CACHE_MODES,
        help="default K/V cache of requests that set none: Fast-dLLM's approximate prefix or dual "
        "cache; none = exact (default: the checkpoint's, else none)",
    )
    parser.add_argument(
        "--kv-cache-memory",
        type=gib,
        default=None,
        metavar="GIB",
        help="K/V cache pool for cached requests, in GiB (default: half the free CUDA memory after "
        "the weights, 1 on CPU; 0: no pool, cached requests are refused)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="torch CPU threads (default: OMP_NUM_THREADS if set, else the physical cores but one)",
    )


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """Sampling flags; unset ones take the checkpoint's generation_config.json defaults."""
    g = parser.add_argument_group("sampling (unset: the checkpoint's defaults)")
    g.add_argument("--max-tokens", type=int, help="generated length")
    g.add_argument("--steps", type=int, help="denoising steps over all blocks")
    g.add_argument("--block-length", type=int, help="semi-autoregressive block size")
    g.add_argument("--temperature", type=float)
    g.add_argument("--remasking", choices=REMASKING)
    g.add_argument("--cfg-scale", type=float, help="classifier-free guidance weight (0: off)")
    g.add_argument("--sampler", choices=SAMPLERS, help="exact (fixed schedule) or continuous")
    g.add_argument("--threshold", type=float, help="parallel decoding: confidence threshold")
    g.add_argument("--factor", type=float, help="parallel decoding: factor rule")
    g.add_argument("--seed", type=int)
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")


def sampling_params_from(args: argparse.Namespace) -> SamplingParams:
    return SamplingParams(
        max_tokens=args.max_tokens,
        steps=args.steps,
        block_length=args.block_length,
        temperature=args.temperature,
        remasking=args.remasking,
        cfg_scale=args.cfg_scale,
        sampler=args.sampler,
        threshold=args.threshold,
        factor=args.factor,
        seed=args.seed,
        stop=args.stop,
    )


def engine_kwargs(args: argparse.Namespace) -> dict:
    if args.kv_cache_memory == 0 and SamplingParams(cache=args.cache).is_cached:
        raise ValueError(f"--cache {args.cache} needs a K/V cache pool: --kv-cache-memory must be > 0")
    return dict(
        tokenizer=args.tokenizer,
        smdm_size=args.smdm_size,
        dtype=args.dtype,
        device=args.device,
        kernels=args.kernels,
        cuda_graphs=args.cuda_graphs,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        cache=args.cache,
        kv_cache_memory=args.kv_cache_memory,
    )


def cmd_generate(args: argparse.Namespace) -> int:
    from engine.llm import LLM

    params = sampling_params_from(args)
    apply_threads(args)
    llm = LLM(args.model, **engine_kwargs(args))
    llm.engine.warm_up()  # kernels or a device that cannot run: one line and status 2, not a traceback
    if args.chat:
        convs = [[{"role": "user", "content": p}] for p in args.prompt]
        outs = llm.chat(convs, params, use_tqdm=not args.quiet)
    else:
        outs = llm.generate(args.prompt, params, use_tqdm=not args.quiet)
    for out in outs:
        if len(outs) > 1:
            print(f"--- [{out.finish_reason}, {out.num_forward_passes} forward passes]")
        print(out.text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="dllm", description="Serve and run masked diffusion LMs.")
    parser.add_argument("--version", action="version", version=f"dllm {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate from one or more prompts")
    add_engine_arguments(gen)
    add_sampling_arguments(gen)
    gen.add_argument("--chat", action="store_true", help="apply the checkpoint's chat template")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.add_argument("prompt", nargs="+")
    gen.set_defaults(func=cmd_generate)

    for name, module, help_text in (
        ("serve", "server.cli", "OpenAI-compatible HTTP server"),
        ("eval", "engine.evaluate", "exact-match accuracy of the demo tasks per sampler mode"),
        ("train-demo", "models.demo_train", "train the demo checkpoint on CPU"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    from models.errors import CheckpointError

    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # serve/eval/train-demo own their flags: their modules are imported only when used.
    if argv and argv[0] in ("serve", "eval", "train-demo"):
        import importlib

        module = importlib.import_module(parser.parse_args(argv[:1]).module)
        sub = ArgumentParser(prog=f"dllm {argv[0]}")
        module.add_arguments(sub)
        args = sub.parse_args(argv[1:])
        runner = module.run
    else:
        args = parser.parse_args(argv)
        runner = args.func
    try:
        return int(runner(args) or 0)
    except (CheckpointError, ValueError) as exc:
        print(f"dllm {argv[0]}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
