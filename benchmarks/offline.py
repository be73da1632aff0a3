"""Offline engine benchmark: generated tokens/s and forward passes/s at batch 1 and batch 8.

    python benchmarks/offline.py                      # tiny random LLaDA-layout model, CPU
    python benchmarks/offline.py --model models/demo  # any checkpoint directory

Prints a table and writes benchmarks/results/offline_<device>.{md,json} (the device name is in both).
Each configuration runs once to warm up, then `--repeats` times; the median is reported.
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

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import LLM, SamplingParams  # noqa: E402


def tiny_model(out_dir: Path) -> Path:
    from models.checkpoint_writer import write_random_checkpoint

    corpus = ["the quick brown fox jumps over the lazy dog 0123456789"] * 50
    return write_random_checkpoint(
        out_dir,
        corpus,
        512,
        d_model=256,
        n_heads=8,
        n_kv_heads=8,
        n_layers=4,
        mlp_hidden_size=768,
        max_sequence_length=1024,
    )


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


def random_llada_8b(device: str, dtype: torch.dtype):
    """LLaDA-8B's exact shapes with random weights, built on the device (no checkpoint on disk)."""
    from models.checkpoint_writer import llada_config_dict
    from models.config import LLaDAConfig
    from models.llada import LLaDAModel
    from models.registry import LoadedModel

    cfg = LLaDAConfig.from_dict(llada_config_dict(**LLADA_8B))
    with torch.device(device):
        model = LLaDAModel(cfg).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02) if p.dim() > 1 else p.fill_(1.0)
    model.requires_grad_(False).eval()
    return LoadedModel(
        path=Path("random-llada-8b"),
        config=cfg,
        model=model,
        tokenizer=None,
        device=torch.device(device),
        dtype=dtype,
        stop_token_ids=(cfg.eos_token_id,),
    )


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def measure(llm: LLM, batch: int, params: SamplingParams, prompt_len: int, repeats: int) -> dict:
    prompts = [[(7 * i + j) % 200 + 10 for j in range(prompt_len)] for i in range(batch)]
    rows = []
    llm.engine.step_listeners[:] = [lambda s: rows.append(s.num_rows)]
    llm.generate(prompt_token_ids=prompts, sampling_params=params)  # warm-up
    times, tokens, forwards = [], 0, 0
    for _ in range(repeats):
        rows.clear()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        outs = llm.generate(prompt_token_ids=prompts, sampling_params=params)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        tokens = sum(len(o.token_ids) for o in outs)
        forwards = len(rows)
    t = statistics.median(times)
    return {
        "batch": batch,
        "seconds": t,
        "generated_tokens": tokens,
        "forward_passes": forwards,
        "tokens_per_s": tokens / t,
        "forwards_per_s": forwards / t,
        "mean_rows_per_forward": sum(rows) / max(len(rows), 1),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint directory (default: a tiny random model)")
    ap.add_argument("--llada-8b", action="store_true", help="random weights at LLaDA-8B shapes, bf16 (GPU)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--kernels", default="auto")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        if args.llada_8b:
            model_dir = random_llada_8b(args.device, torch.bfloat16)
        else:
            model_dir = args.model or tiny_model(Path(tmp))
        llm = LLM(model_dir, device=args.device, kernels=args.kernels)
        params = SamplingParams(
            max_tokens=args.max_tokens,
            steps=args.max_tokens,
            block_length=args.block_length,
            temperature=0.0,
            ignore_eos=True,
        )
        results = [
            measure(llm, int(b), params, args.prompt_len, args.repeats) for b in args.batches.split(",")
        ]

    dev = device_name(args.device)
    what = (
        "random LLaDA-8B shapes, bf16"
        if args.llada_8b
        else args.model or "tiny random model (d=256, 4 layers)"
    )
    header = (
        f"Offline engine, {what}, "
        f"device: {dev}, kernels: {llm.engine.ops.name}, prompt {args.prompt_len}, "
        f"max_tokens {args.max_tokens}, block {args.block_length}, one token per step"
    )
    lines = [
        header,
        "",
        "| batch | tokens/s | forwards/s | rows/forward | seconds |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['batch']} | {r['tokens_per_s']:.1f} | {r['forwards_per_s']:.1f} | "
            f"{r['mean_rows_per_forward']:.1f} | {r['seconds']:.2f} |"
        )
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "gpu" if args.device.startswith("cuda") else "cpu"
    name = f"offline_{tag}_{llm.engine.ops.name}" + ("_llada8b" if args.llada_8b else "")
    if args.model:
        name += "_" + Path(args.model).name
    (out / f"{name}.md").write_text(table + "\n")
    (out / f"{name}.json").write_text(
        json.dumps({"device": dev, "header": header, "results": results}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
