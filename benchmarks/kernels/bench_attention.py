"""Packed varlen attention vs torch SDPA (fastest working backend) on the padded equivalent.

LLaDA-8B: 32 heads x 128, bf16, 32 fresh queries per sequence, 64..4096 keys per sequence (cached
segment + block), batch 1..64. With equal key lengths the padded [B, H, 32, D] x [B, H, L, D] SDPA call
is exactly equivalent and needs no mask; the 'mixed' rows give each sequence a different key length
(64..max), which SDPA can only do padded to the longest with a boolean mask.
FLOPs = 4 * B * H * 32 * L * D (QK^T and PV); bytes = q + out + k + v actually needed.
"""

import functools

import torch
import torch.nn.functional as F
from _common import H200_BF16_TFLOPS, H200_COPY_TBPS, Report, bench_ms, tbps, tflops

from kernels.attention import attention, choose_num_splits

HEADS, HEAD_DIM, QUERIES = 32, 128, 32
BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION")


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
                torch.cuda.synchronize()
                ms = bench_ms(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
        except Exception:  # backend does not support this case (mask, shape): try the next
            continue
        best = min(best, (ms, name.lower()))
    return best


def run_case(report: Report, num_seqs: int, k_lens: list[int], label: str) -> None:
    dev = "cuda"
    total_k, max_k = sum(k_lens), max(k_lens)
    cu_q = torch.arange(0, (num_seqs + 1) * QUERIES, QUERIES, dtype=torch.int32, device=dev)
    cu_k = torch.tensor([0] + torch.tensor(k_lens).cumsum(0).tolist(), dtype=torch.int32, device=dev)
    q = torch.randn(num_seqs * QUERIES, HEADS, HEAD_DIM, device=dev, dtype=torch.bfloat16)
    k = torch.randn(total_k, HEADS, HEAD_DIM, device=dev, dtype=torch.bfloat16)
    v = torch.randn_like(k)
    flops = 4.0 * HEADS * QUERIES * HEAD_DIM * total_k
    num_bytes = 2 * (2 * q.numel() + 2 * k.numel())

    def add(impl, ms):
        bw, fl = tbps(num_bytes, ms), tflops(flops, ms)
        report.add(
            batch=num_seqs,
            keys=label,
            impl=impl,
            ms=ms,
            **{"TB/s": bw, "TFLOP/s": fl},
            frac_measured_copy=bw / report.copy_tbps,
            frac_h200_copy=bw / H200_COPY_TBPS,
            frac_bf16_matmul=fl / H200_BF16_TFLOPS,
        )

    sms = torch.cuda.get_device_properties(q.device).multi_processor_count
    splits = choose_num_splits(q.shape[0], total_k, num_seqs, HEADS, QUERIES, sms)
    variants = [("triton_varlen", None)]  # what the model runs: splits chosen from the shapes
    if splits > 1:
        variants[0] = (f"triton_varlen[{splits} splits]", None)
        variants.append(("triton_varlen[no split]", 1))
    for impl, num_splits in variants:
        try:
            add(impl, bench_ms(functools.partial(attention, q, k, v, cu_q, cu_k, num_splits=num_splits)))
        except Exception as exc:
            print(f"  {impl} B={num_seqs} keys={label} failed: {type(exc).__name__}: {exc}")
    qp = q.view(num_seqs, QUERIES, HEADS, HEAD_DIM).transpose(1, 2).contiguous()
    kp = torch.zeros(num_seqs, HEADS, max_k, HEAD_DIM, device=dev, dtype=torch.bfloat16)
    vp = torch.zeros_like(kp)
    for b, (start, n) in enumerate(zip(cu_k[:-1].tolist(), k_lens, strict=True)):
        kp[b, :, :n] = k[start : start + n].transpose(0, 1)
        vp[b, :, :n] = v[start : start + n].transpose(0, 1)
    mask = None
    if min(k_lens) != max_k:
        lens = torch.tensor(k_lens, device=dev)
        mask = (torch.arange(max_k, device=dev)[None, :] < lens[:, None])[:, None, None, :]
    del q, k, v
    ms, backend = best_sdpa(qp, kp, vp, mask)
    if ms != float("inf"):
        add(f"sdpa_padded[{backend}]", ms)


def main() -> None:
    report = Report(
        "bench_attention",
        [
            "batch",
            "keys",
            "impl",
            "ms",
            "TB/s",
            "TFLOP/s",
            "frac_measured_copy",
            "frac_h200_copy",
            "frac_bf16_matmul",
        ],
    )
    for num_seqs in (1, 8, 32, 64):
        for keys in (64, 512, 1024, 4096):
            run_case(report, num_seqs, [keys] * num_seqs, str(keys))
        torch.cuda.empty_cache()
    for num_seqs in (8, 64):
        k_lens = torch.linspace(64, 4096, num_seqs).round().long().tolist()
        run_case(report, num_seqs, k_lens, "mixed 64..4096")
    report.save()


if __name__ == "__main__":
    main()
