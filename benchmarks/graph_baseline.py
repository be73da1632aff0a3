"""The engine's cached step against a plain-torch CUDA-graph step of the same shapes, in one run.

    python benchmarks/graph_baseline.py --device cuda --llada-8b --batches 1,32   # GPU check
    python benchmarks/graph_baseline.py --batches 2                              # CPU smoke run

Two engines over the same weights, run interleaved on the same workload (offline.py's: prompt 64,
256 tokens, blocks of 32, one token per step, dual cache, temperature 0):
- "engine": the Triton kernels with the engine's CUDA graphs (CUDA), or the torch kernels (CPU);
- "torch+graphs": the same engine with every op a plain-torch reference and the paged attention
  replaced by a dense one, so that the step holds no host read and can be captured: each row's
  pages gathered into [B, keys], masked by its key count, one scaled_dot_product_attention (it
  assumes every row queries the same number of positions, which this workload guarantees). Its
  block steps are replayed from CUDA graphs like the engine's, with the narrowest page tables that
  hold a request (512 positions for 320; the engine's are at least 1024 wide). On the CPU nothing
  is captured: both run eagerly, the "graphs" as their padded static-buffer forward (a smoke run of
  the code, not a measurement).

Prints a table (tokens/s of both, and the engine's over the baseline's), and writes
OUT/graph_baseline_<cpu|gpu>.{md,json} with the device name. The issue's goal, judged by
benchmarks/engine_goals.py: at batch 32 the engine reaches at least 1.3x the baseline's tokens/s.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from bench_out import add_out_argument  # noqa: E402
from offline import device_name, measure_batch, random_checkpoint, random_llada_8b  # noqa: E402

from engine import LLM  # noqa: E402
from kernels.ops import TorchOps  # noqa: E402


def dense_paged_attention(q, k_cache, v_cache, cu_seqlens_q, page_table, kv_lens, page_size, scale=None):
    """`paged_attention_ref` for rows that all query the same number of positions, with no host read:
    every row's table gathered into [B, width * page_size] keys, those past kv_lens masked out."""
    rows, width = page_table.shape
    n, heads, dim = q.shape
    keys = width * page_size
    pos = torch.arange(keys, device=q.device)
    slots = page_table.long()[:, pos // page_size] * page_size + pos % page_size  # [B, keys]
    k = k_cache[slots].transpose(1, 2)  # [B, Hkv, keys, D]
    v = v_cache[slots].transpose(1, 2)
    mask = (pos[None, :] < kv_lens[:, None].long())[:, None, None, :]
    qb = q.view(rows, n // rows, heads, dim).transpose(1, 2)
    out = F.scaled_dot_product_attention(
        qb, k, v, attn_mask=mask, scale=scale, enable_gqa=heads != k.shape[1]
    )
    return out.transpose(1, 2).reshape(n, heads, dim)


class DenseTorchOps(TorchOps):
    """Plain-torch ops whose paged attention a CUDA graph can hold (uniform rows only)."""

    name = "torch+graphs"
    paged_attention = staticmethod(dense_paged_attention)


def torch_graph_engine(model, device: str) -> LLM:
    """An engine over `model` with plain-torch ops and CUDA graphs of its block steps (emulated off
    CUDA)."""
    llm = LLM(model, device=device, kernels="torch", cuda_graphs="off")
    runner = llm.engine.runner
    runner.ops = runner.post_forward.ops = llm.engine.ops = DenseTorchOps()
    max_rows = 2 * llm.engine.config.max_num_seqs
    # The narrowest page tables (a power of two above the workload's pages): the dense attention
    # gathers every position a table names, so a wider one would only add work.
    capture = torch.device(device).type == "cuda"
    runner.use_cuda_graphs(max_rows=max_rows, capture=capture, min_width_positions=1)
    return llm


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--llada-8b", action="store_true", help="random weights at LLaDA-8B shapes, bf16")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=1)
    add_out_argument(ap)
    args = ap.parse_args(argv)
    # What offline.measure_batch reads.
    args.caches, args.tokens_per_step, args.cuda_graphs = ["dual"], 1, "auto"
    on_cuda = args.device.startswith("cuda")
    if not on_cuda:
        torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        if args.llada_8b:
            model = random_llada_8b(args.device, torch.bfloat16)
        else:
            model = random_checkpoint(Path(tmp), d_model=128, n_layers=2, vocab_size=4096)
        engines = {
            "engine": LLM(model, device=args.device, kernels="auto", cuda_graphs="auto"),
            "torch+graphs": torch_graph_engine(model, args.device),
        }
        rows = []
        for batch in (int(b) for b in args.batches.split(",")):
            for label, llm in engines.items():
                (row,) = measure_batch(llm, batch, args)
                graphs = llm.engine.runner.graphs
                row["engine"] = label
                row["graph_replays"] = graphs.num_replays if graphs is not None else 0  # so far, in all
                rows.append(row)

    lines = [
        f"Dual-cache step, engine vs plain-torch CUDA-graph step; device: {device_name(args.device)}; "
        f"{'random LLaDA-8B shapes, bf16' if args.llada_8b else 'tiny random model (CPU smoke run)'}, "
        f"prompt {args.prompt_len}, {args.max_tokens} tokens, block {args.block_length}, one token per step",
        "",
        "| batch | engine tokens/s | torch+graphs tokens/s | engine / torch+graphs |",
        "|---|---|---|---|",
    ]
    for batch in sorted({r["batch"] for r in rows}):
        ours, base = (next(r for r in rows if r["batch"] == batch and r["engine"] == e) for e in engines)
        ratio = ours["tokens_per_s"] / base["tokens_per_s"]
        lines.append(f"| {batch} | {ours['tokens_per_s']:.1f} | {base['tokens_per_s']:.1f} | {ratio:.2f}x |")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"graph_baseline_{'gpu' if on_cuda else 'cpu'}"
    (out / f"{name}.md").write_text(table + "\n")
    record = {"device": device_name(args.device), "header": lines[0], "results": rows}
    (out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
