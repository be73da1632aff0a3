"""Sampling head over LLaDA's 126464-token vocabulary, bf16 logits: fused Triton pass vs the float64
path of LLaDA's published sampler (Gumbel noise in float64 over [R, V], argmax, fp32 softmax for the
confidence, gather). Time and peak extra memory per call; TB/s counts only the logits read once.
`triton_fused` splits each row's vocabulary as the launcher chooses (`splits` column); where that is
more than one, `triton_fused[no split]` is one program per row, for comparison.
"""

import functools

import torch
from _common import DEVICE, H200_COPY_TBPS, Report, bench_ms, empty_cache, peak_mem_mb, pick, sm_count, tbps

from kernels.sampling_head import BLOCK_V, choose_head_splits, sample_head

VOCAB = pick(126464, 20000)


def llada_float64(logits, temperature, uncond=None, cfg_scale=0.0):
    """The reference sampler's tensor path (one temperature for the batch, as in LLaDA's code)."""
    if uncond is not None:
        logits = uncond + (cfg_scale + 1) * (logits - uncond)
    t = float(temperature[0])
    if t == 0:
        tokens = torch.argmax(logits, dim=-1)
    else:
        lg = logits.to(torch.float64)
        noise = torch.rand_like(lg)
        gumbel_noise = (-torch.log(noise)) ** t
        tokens = torch.argmax(lg.exp() / gumbel_noise, dim=-1)
    probs = torch.softmax(logits.float(), dim=-1)
    return tokens, torch.gather(probs, -1, tokens[:, None]).squeeze(-1)


def main() -> None:
    report = Report(
        "bench_sampling_head",
        [
            "rows",
            "mode",
            "impl",
            "splits",
            "ms",
            "peak_extra_MiB",
            "TB/s",
            "frac_measured_copy",
            "frac_h200_copy",
        ],
    )
    for rows in pick((32, 256, 2048), (2,)):
        logits = torch.randn(rows, VOCAB, device=DEVICE, dtype=torch.bfloat16) * 3
        uncond = torch.randn_like(logits) * 3
        seeds = torch.arange(rows, device=DEVICE)
        for mode, temp_value, with_cfg in (
            ("greedy", 0.0, False),
            ("T=0.7", 0.7, False),
            ("T=0.7+cfg", 0.7, True),
        ):
            temp = torch.full((rows,), temp_value, device=DEVICE)
            un = uncond if with_cfg else None
            num_bytes = logits.numel() * 2 * (2 if with_cfg else 1)
            splits = choose_head_splits(rows, VOCAB, BLOCK_V, sm_count())  # as the launcher on this GPU
            fused = functools.partial(sample_head, logits, temp, seeds, un, 1.0, num_splits=splits)
            impls = {"triton_fused": (fused, splits)}
            if splits > 1:
                no_split = functools.partial(sample_head, logits, temp, seeds, un, 1.0, num_splits=1)
                impls["triton_fused[no split]"] = (no_split, 1)
            impls["llada_float64"] = (functools.partial(llada_float64, logits, temp, un, 1.0), None)
            for name, (fn, num_splits) in impls.items():
                try:
                    mem = peak_mem_mb(fn)
                    ms = bench_ms(fn)
                except Exception as exc:  # e.g. out of memory in the float64 path
                    print(f"  {name} rows={rows} {mode} failed: {type(exc).__name__}: {exc}")
                    empty_cache()
                    continue
                bw = tbps(num_bytes, ms)
                report.add(
                    rows=rows,
                    mode=mode,
                    impl=name,
                    splits=num_splits,
                    ms=ms,
                    peak_extra_MiB=mem,
                    **{"TB/s": bw},
                    frac_measured_copy=bw / report.copy_tbps,
                    frac_h200_copy=bw / H200_COPY_TBPS,
                )
        del logits, uncond
        empty_cache()
    report.save()


if __name__ == "__main__":
    main()
