"""Packed varlen attention vs torch SDPA (fastest working backend) on the padded equivalent.

LLaDA-8B: 32 heads x 128, bf16, 32 fresh queries per sequence, 64..4096 keys per sequence (cached
segment + block), batch 1..64. With equal key lengths the padded [B, H, 32, D] x [B, H, L, D] SDPA call
is exactly equivalent and needs no mask; the 'mixed' rows give each sequence a different key length
(64..max), which SDPA can only do padded to the longest with a boolean mask. The 'canvas' rows are an
exact step: every position of a sequence's canvas (prompt + answer) is a query against all of them.
FLOPs = 4 * B * H * Lq * Lk * D (QK^T and PV); bytes = q + out + k + v actually needed.

A second table (bench_attention_paged) is the dual-cache step: each row's 32 queries against its 320
or 4096 cached keys held in 16-key pages scattered over a pool (`paged_attention`), timed against the
contiguous kernel and SDPA on the same keys gathered into rows. It is saved after the first table.

`--sweep` times other tiles and launch options of the Triton kernel (`LaunchConfig`) on the 4096-key
and canvas workloads instead, to choose `launch_config` from measurements (bench_attention_sweep).
"""

import argparse
import dataclasses
import functools

import torch
import torch.nn.functional as F
from _common import DEVICE, Report, add_row, add_timed, bench_ms, empty_cache, pick, sm_count, synchronize

from kernels.attention import attention, choose_num_splits, launch_config, paged_attention, paged_slots

HEADS, HEAD_DIM, QUERIES = pick((32, 128, 32), (2, 64, 5))
PAGE_SIZE = 16
BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION")
# (block_m, block_n, num_warps, num_stages); None keeps launch_config's block_m. All compile for
# sm_90 without spills (checked with tests/kernels/compile_sm90.py's harness).
BLOCK_SWEEP = [(None, n, w, s) for n in (64, 128) for w in (4, 8) for s in (2, 3)]
CANVAS_SWEEP = [(None, 64, 4, 2), (None, 64, 8, 3), (None, 128, 8, 2), (128, 64, 8, 2), (128, 64, 8, 3)]


def best_sdpa(q, k, v, mask):
    """(ms, backend name) of the fastest SDPA backend that accepts these inputs."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    best = (float("inf"), "none")
    for name in BACKENDS:
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            continue
        try:
            with sdpa_kernel(backend):
                F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
                synchronize()
                ms = bench_ms(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
        except Exception:  # backend does not support this case (mask, shape): try the next
            continue
        best = min(best, (ms, name.lower()))
    return best


def triton_variants(num_q, total_k, num_seqs, sweep):
    """(row name, num_splits, config) of the Triton runs: what the model runs, plus 'no split' when
    it splits; with `sweep`, each swept config at the split count the launcher picks."""
    sms = sm_count()
    default = launch_config(num_q, num_seqs, HEAD_DIM, torch.bfloat16)
    splits = choose_num_splits(num_q, total_k, num_seqs, HEADS, default.block_m, sms)
    tag = f"[{splits} splits]" if splits > 1 else ""
    if sweep is None:
        variants = [(f"triton_varlen{tag}", None, None)]
        return variants + ([("triton_varlen[no split]", 1, None)] if splits > 1 else [])
    variants = []
    for block_m, block_n, warps, stages in sweep:
        config = dataclasses.replace(
            default, block_m=block_m or default.block_m, block_n=block_n, num_warps=warps, num_stages=stages
        )
        name = f"triton m{config.block_m} n{block_n} w{warps} s{stages}{tag}"
        variants.append((name + (" (default)" if config == default else ""), None, config))
    return variants


def add_sdpa(report: Report, q, k, v, cu_k, k_lens: list[int], cost, labels: dict) -> None:
    """A row for the best SDPA backend on the padded equivalent of packed q, k, v (the same number of
    queries per sequence); none if every backend fails."""
    dev, num_seqs, max_k = q.device, len(k_lens), max(k_lens)
    queries = q.shape[0] // num_seqs
    qp = q.view(num_seqs, queries, HEADS, HEAD_DIM).transpose(1, 2).contiguous()
    kp = torch.zeros(num_seqs, HEADS, max_k, HEAD_DIM, device=dev, dtype=torch.bfloat16)
    vp = torch.zeros_like(kp)
    for b, (start, n) in enumerate(zip(cu_k[:-1].tolist(), k_lens, strict=True)):
        kp[b, :, :n] = k[start : start + n].transpose(0, 1)
        vp[b, :, :n] = v[start : start + n].transpose(0, 1)
    mask = None
    if min(k_lens) != max_k:
        lens = torch.tensor(k_lens, device=dev)
        mask = (torch.arange(max_k, device=dev)[None, :] < lens[:, None])[:, None, None, :]
    ms, backend = best_sdpa(qp, kp, vp, mask)
    if ms != float("inf"):
        add_row(report, f"sdpa_padded[{backend}]", ms, cost, **labels)


def run_case(report: Report, num_seqs: int, k_lens: list[int], label: str, queries=QUERIES, sweep=None):
    dev = DEVICE
    total_k = sum(k_lens)
    cu_q = torch.arange(0, (num_seqs + 1) * queries, queries, dtype=torch.int32, device=dev)
    cu_k = torch.tensor([0] + torch.tensor(k_lens).cumsum(0).tolist(), dtype=torch.int32, device=dev)
    q = torch.randn(num_seqs * queries, HEADS, HEAD_DIM, device=dev, dtype=torch.bfloat16)
    k = torch.randn(total_k, HEADS, HEAD_DIM, device=dev, dtype=torch.bfloat16)
    v = torch.randn_like(k)
    cost = (2 * (2 * q.numel() + 2 * k.numel()), 4.0 * HEADS * queries * HEAD_DIM * total_k)
    labels = {"batch": num_seqs, "queries": queries, "keys": label}
    for impl, num_splits, config in triton_variants(q.shape[0], total_k, num_seqs, sweep):
        run = functools.partial(attention, q, k, v, cu_q, cu_k, num_splits=num_splits, config=config)
        add_timed(report, impl, run, cost, **labels)
    add_sdpa(report, q, k, v, cu_k, k_lens, cost, labels)


def run_paged_case(report: Report, num_seqs: int, keys: int) -> None:
    """Each row's QUERIES queries against its `keys` keys in PAGE_SIZE-key pages, dealt to rows in a
    shuffled order; the table names exactly those pages, so the launcher's split bound is the real
    length. Then the contiguous kernel and SDPA on the same keys gathered row after row."""
    dev, pages = DEVICE, -(-keys // PAGE_SIZE)
    table = torch.randperm(num_seqs * pages, device=dev).view(num_seqs, pages).int()
    kv_lens = torch.full((num_seqs,), keys, dtype=torch.int32, device=dev)
    k_cache = torch.randn(num_seqs * pages * PAGE_SIZE, HEADS, HEAD_DIM, device=dev, dtype=torch.bfloat16)
    v_cache = torch.randn_like(k_cache)
    q = torch.randn(num_seqs * QUERIES, HEADS, HEAD_DIM, device=dev, dtype=torch.bfloat16)
    cu_q = torch.arange(0, (num_seqs + 1) * QUERIES, QUERIES, dtype=torch.int32, device=dev)
    cost = (
        2 * (2 * q.numel() + 2 * num_seqs * keys * HEADS * HEAD_DIM),
        4.0 * HEADS * QUERIES * HEAD_DIM * num_seqs * keys,
    )
    labels = {"batch": num_seqs, "queries": QUERIES, "keys": keys, "page_size": PAGE_SIZE}
    variants = triton_variants(q.shape[0], num_seqs * pages * PAGE_SIZE, num_seqs, None)
    for impl, num_splits, _ in variants:
        run = functools.partial(
            paged_attention, q, k_cache, v_cache, cu_q, table, kv_lens, PAGE_SIZE, num_splits=num_splits
        )
        add_timed(report, impl.replace("varlen", "paged"), run, cost, **labels)
    slots = paged_slots(table, kv_lens, PAGE_SIZE)
    k, v = k_cache[slots], v_cache[slots]
    del k_cache, v_cache
    cu_k = torch.arange(0, (num_seqs + 1) * keys, keys, dtype=torch.int32, device=dev)
    contiguous = triton_variants(q.shape[0], k.shape[0], num_seqs, None)[0][0]  # as `attention` splits
    add_timed(report, contiguous, functools.partial(attention, q, k, v, cu_q, cu_k), cost, **labels)
    add_sdpa(report, q, k, v, cu_k, [keys] * num_seqs, cost, labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", action="store_true", help="time other Triton tiles (see the module doc)")
    sweep = parser.parse_args().sweep
    columns = ["batch", "queries", "keys", "impl", "ms", "TB/s", "TFLOP/s"]
    columns += ["frac_measured_copy", "frac_h200_copy", "frac_bf16_matmul"]
    report = Report("bench_attention_sweep" if sweep else "bench_attention", columns)
    short_keys, long_keys = pick((64, 4096), (9, 1100))
    canvases = pick(((8, 1024), (1, 4096)), ((2, 40),))
    if sweep:
        for num_seqs in pick((1, 8, 64), (1,)):
            run_case(report, num_seqs, [long_keys] * num_seqs, str(long_keys), sweep=BLOCK_SWEEP)
        for num_seqs, canvas in canvases:
            run_case(report, num_seqs, [canvas] * num_seqs, f"canvas {canvas}", canvas, CANVAS_SWEEP)
        report.save()
        return
    for num_seqs in pick((1, 8, 32, 64), (1, 3)):
        for keys in pick((short_keys, 512, 1024, long_keys), (short_keys, long_keys)):
            run_case(report, num_seqs, [keys] * num_seqs, str(keys))
        empty_cache()
    for num_seqs in pick((8, 64), (3,)):
        k_lens = torch.linspace(short_keys, long_keys, num_seqs).round().long().tolist()
        run_case(report, num_seqs, k_lens, f"mixed {short_keys}..{long_keys}")
    for num_seqs, canvas in canvases:
        run_case(report, num_seqs, [canvas] * num_seqs, f"canvas {canvas}", queries=canvas)
    report.save()
    empty_cache()
    paged = Report("bench_attention_paged", columns[:3] + ["page_size"] + columns[3:])
    for num_seqs in pick((1, 8, 32), (1, 3)):
        for keys in pick((320, long_keys), (short_keys, long_keys)):
            run_paged_case(paged, num_seqs, keys)
        empty_cache()
    paged.save()


if __name__ == "__main__":
    main()
