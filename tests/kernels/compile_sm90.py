"""Compile every kernel for sm_90 (H100/H200) on a machine without a GPU, exactly as its launcher
launches it at LLaDA-8B shapes, and read what ptxas says about the result.

Each case calls a public launcher (`kernels.attention.attention`, ...) with meta tensors. The kernel
launch is captured instead of run, then bound and specialised the way Triton's JIT does it on a GPU
(pointers and ints that are multiples of 16 get `tt.divisibility=16`, ints equal to 1 become
constants: without that the loads neither vectorise nor pipeline and the listing would not be the
GPU's), compiled for sm_90a by Triton's NVIDIA back end, and the PTX is run through the bundled
`ptxas -v` for registers and spills. Binding and specialising use Triton 3.6's JIT internals
(`create_function_from_signature`, `JITFunction._pack_args`): a Triton upgrade that moves them makes
this check fail loudly rather than pass.

Fails on what the interpreter lets through (tile shapes, tl.dot constraints, loop-carried types,
shared memory) and on what would only make a kernel slow: spills to local memory, an attention loop
whose K/V loads are not software-pipelined (no cp.async), a paged attention loop that loads each
tile's page-table entries with blocking loads before its K/V copies instead of prefetching them by
4-byte cp.async (`cp.async.ca`; K/V rows use 16-byte `cp.async.cg`), a grouped MoE GEMM whose tile
loads are not software-pipelined, a memory-bound kernel without 16-byte global loads (the
split-combining kernels are judged on spills only). Run with TRITON_INTERPRET unset:
`PYTHONPATH=. python tests/kernels/compile_sm90.py`; one line per launch, exit 1 on any failure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from unittest import mock

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import get_ptxas
from triton.compiler import ASTSource, make_backend
from triton.runtime.jit import JITFunction, create_function_from_signature

from kernels.attention import attention, choose_num_splits, launch_config, paged_attention
from kernels.moe import grouped_moe
from kernels.rms_norm import rms_norm
from kernels.rotary import rotary
from kernels.sampling_head import BLOCK_V, choose_head_splits, sample_head
from kernels.swiglu import swiglu

TARGET = GPUTarget("cuda", 90, 32)
BACKEND = make_backend(TARGET)
H200_SMS = 132  # H100 SXM has 132 too: the split count the launcher picks there
META = torch.device("meta")
# Kernels that stream their operands once (bandwidth-bound): they must read 16 bytes at a time. The
# split-combining kernels read a few KB and are judged on spills only.
STREAMING = {"_rms_norm_kernel", "_swiglu_kernel", "_rotary_kernel", "_sample_head_kernel"}


@dataclass
class Launch:
    fn: JITFunction
    args: tuple
    kwargs: dict


@contextlib.contextmanager
def captured_launches():
    """Within the block, `kernel[grid](...)` records a Launch instead of running."""
    launches: list[Launch] = []

    def record(self, *args, grid, warmup, **kwargs):
        launches.append(Launch(self, args, kwargs))

    with mock.patch.object(JITFunction, "run", record):
        yield launches


def compile_launch(launch: Launch):
    """What JITFunction.run does on a GPU before the launch: bind, specialise, compile."""
    fn = launch.fn
    binder = create_function_from_signature(fn.signature, fn.params, BACKEND)
    bound, specialization, options = binder(*launch.args, **launch.kwargs)
    options, signature, constexprs, attrs = fn._pack_args(
        BACKEND, launch.kwargs, bound, specialization, options
    )
    return triton.compile(
        ASTSource(fn, signature, constexprs, attrs), target=TARGET, options=options.__dict__
    )


def ptxas_report(ptx: str) -> tuple[int, int]:
    """(registers per thread, spill store bytes) from `ptxas -v` on this PTX."""
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as src:
        src.write(ptx)
        src.flush()
        log = subprocess.run(
            [get_ptxas(90).path, "-v", "--gpu-name=sm_90a", src.name, "-o", "/dev/null"],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores", log)
    assert regs and spills, log
    return int(regs.group(1)), int(spills.group(1))


def findings(launch: Launch) -> tuple[str, list[str]]:
    """Compile one captured launch: (its figures, what would make it slow on a GPU)."""
    kernel = compile_launch(launch)
    ptx = kernel.asm["ptx"]
    regs, spills = ptxas_report(ptx)
    num_async = len(re.findall(r"cp\.async\.c[ag]\.shared\.global", ptx))
    num_small_async = len(re.findall(r"cp\.async\.ca\.shared\.global", ptx))  # 4-byte: page-table entries
    num_wide = len(re.findall(r"ld\.global(?:\.\w+)*\.v4\.b32", ptx))
    problems = []
    if spills:
        problems.append(f"{spills} B of spills")
    if launch.fn.__name__ == "_attention_kernel" and num_async == 0:
        problems.append("K/V loads not pipelined (no cp.async)")
    if launch.fn.__name__ == "_moe_gemm_kernel" and num_async == 0:
        problems.append("token and weight tiles not pipelined (no cp.async)")
    if launch.kwargs.get("PAGED") and num_small_async == 0:
        problems.append("page-table entries not prefetched (no cp.async.ca)")
    if launch.fn.__name__ in STREAMING and num_wide == 0:
        problems.append("no 16-byte global loads")
    figures = (
        f"{regs} registers, {spills} B spilled, shared {kernel.metadata.shared} B, {num_async} cp.async"
        + (f" ({num_small_async} of 4 bytes)" if num_small_async else "")
        + f", {num_wide} 16-byte loads"
    )
    return figures, problems


def judge(name: str, launch: Launch, mode: str) -> bool:
    """Print one launch's line. strict: passes without problems; control: a launch built to be
    slow, passes only if the problems are seen (so the check can fail)."""
    label = f"{name}: {launch.fn.__name__}"
    if "GATED" in launch.kwargs:  # the MoE kernel's two launches
        label += " (gate/up + SwiGLU)" if launch.kwargs["GATED"] else " (down x routing weight)"
    try:
        figures, problems = findings(launch)
    except Exception as exc:
        print(f"FAIL {label}: {type(exc).__name__}: {exc}")
        return False
    passed = {"strict": not problems, "control": bool(problems)}[mode]
    verdict = "ok  " if passed else "FAIL"
    note = f"  <- {'; '.join(problems)}" if problems else ""
    if mode == "control":
        note += "  (control: should be flagged)"
    print(f"{verdict} {label}: {figures}{note}")
    return passed


def meta(*shape, dtype=torch.bfloat16):
    return torch.empty(shape, dtype=dtype, device=META)


def attention_case(dtype, num_seqs, queries, keys, heads=32, kv_heads=32, head_dim=128):
    """Each sequence's `queries` rows attend to `keys` rows; splits as the launcher picks on an H200."""
    q = meta(num_seqs * queries, heads, head_dim, dtype=dtype)
    k = meta(num_seqs * keys, kv_heads, head_dim, dtype=dtype)
    cu = meta(num_seqs + 1, dtype=torch.int32)
    config = launch_config(q.shape[0], num_seqs, head_dim, dtype)
    splits = choose_num_splits(q.shape[0], k.shape[0], num_seqs, heads, config.block_m, H200_SMS)
    attention(q, k, torch.empty_like(k), cu, torch.empty_like(cu), num_splits=splits)


def paged_case(num_seqs, keys, page_size=16, num_stages=None, heads=32, head_dim=128):
    """A dual-cache step in bf16: each row's 32 queries attend to `keys` keys held in `page_size`-key
    pages of a pool (the table names exactly those pages, so the launcher's upper bound on a row's
    keys is the real length); splits as the launcher picks on an H200. num_stages: override
    `launch_config`'s (the control)."""
    pages = keys // page_size
    q = meta(num_seqs * 32, heads, head_dim)
    pool = meta((num_seqs * pages + 64) * page_size, heads, head_dim)
    table, lens, cu = (
        meta(*shape, dtype=torch.int32) for shape in ((num_seqs, pages), (num_seqs,), (num_seqs + 1,))
    )
    config = launch_config(q.shape[0], num_seqs, head_dim, torch.bfloat16, paged=True)
    if num_stages is not None:
        config = dataclasses.replace(config, num_stages=num_stages)
    splits = choose_num_splits(
        q.shape[0], num_seqs * pages * page_size, num_seqs, heads, config.block_m, H200_SMS
    )
    paged_attention(
        q, pool, torch.empty_like(pool), cu, table, lens, page_size, num_splits=splits, config=config
    )


def moe_case(dtype, tokens, dim=2048, inter=1024, num_experts=64, top_k=8):
    """LLaDA-MoE's expert MLP over `tokens` tokens: the gate/up launch, then the down launch."""
    w_gate_up = meta(num_experts, 2 * inter, dim, dtype=dtype)
    w_down = meta(num_experts, dim, inter, dtype=dtype)
    routing = meta(tokens, top_k, dtype=torch.float32), meta(tokens, top_k, dtype=torch.int64)
    grouped_moe(meta(tokens, dim, dtype=dtype), w_gate_up, w_down, *routing)


def odd_attention(dtype):
    q = meta(256, 32, 128, dtype=dtype)
    k = meta(1024, 32 * 128 + 1, dtype=dtype)[:, 1:].view(1024, 32, 128)
    cu = meta(9, dtype=torch.int32)
    attention(q, k, k, cu, cu, num_splits=1)


def cases():
    """(name, mode for `judge`, launcher call on meta tensors). LLaDA-8B: d 4096, 32 heads x 128 (MHA),
    MLP 12288, vocabulary 126464, 256 tokens a forward. A cached step's queries are a 32-token block;
    an exact step's are the whole canvas (prompt + answer). LLaDA-MoE: d 2048, 64 experts of 1024,
    top-8; 1, 256 and 1024 tokens take 16-, 32- and 64-slot blocks."""
    bf16, fp16, fp32 = torch.bfloat16, torch.float16, torch.float32
    out = [
        (
            f"attention bf16 B={b} block of 32 vs {n} keys",
            "strict",
            lambda b=b, n=n: attention_case(bf16, b, 32, n),
        )
        for b, n in ((1, 4096), (8, 4096), (64, 4096), (8, 64))
    ]
    out += [
        ("attention bf16 B=8 canvas 1024", "strict", lambda: attention_case(bf16, 8, 1024, 1024)),
        ("attention bf16 B=1 canvas 4096", "strict", lambda: attention_case(bf16, 1, 4096, 4096)),
        ("attention fp16 GQA 32/8 B=8", "strict", lambda: attention_case(fp16, 8, 32, 1024, kv_heads=8)),
        ("attention bf16 16 x 64 B=8", "strict", lambda: attention_case(bf16, 8, 32, 1024, 16, 16, 64)),
        (
            "attention bf16 8 x 256 B=8 canvas 512",
            "strict",
            lambda: attention_case(bf16, 8, 512, 512, 8, 8, 256),
        ),
        ("attention fp32 B=8", "strict", lambda: attention_case(fp32, 8, 32, 1024)),
        ("attention fp32 B=8 canvas 1024", "strict", lambda: attention_case(fp32, 8, 1024, 1024)),
        (
            "attention fp32 8 x 256 B=8 canvas 512",
            "strict",
            lambda: attention_case(fp32, 8, 512, 512, 8, 8, 256),
        ),
        ("attention fp32 demo model 4 x 32", "strict", lambda: attention_case(fp32, 8, 96, 96, 4, 4, 32)),
    ]
    # Dual-cache steps read their keys through a page table: 4096 keys split for B=1 and 8, not for 32.
    out += [
        (f"paged attention bf16 B={b} block of 32 vs {n} keys", "strict", lambda b=b, n=n: paged_case(b, n))
        for b, n in ((1, 4096), (8, 4096), (32, 4096), (1, 320), (8, 320), (32, 320))
    ]
    for dtype in (bf16, fp32):
        tag = str(dtype).removeprefix("torch.")
        x, w, gate = meta(256, 4096, dtype=dtype), meta(4096, dtype=dtype), meta(256, 12288, dtype=dtype)
        logits, temps, seeds = (
            meta(64, 126464, dtype=dtype),
            meta(64, dtype=fp32),
            meta(64, dtype=torch.int64),
        )
        heads, positions, table = (
            meta(256, 32, 128, dtype=dtype),
            meta(256, dtype=torch.int64),
            meta(4096, 64, dtype=fp32),
        )
        out += [
            (f"rms_norm {tag}", "strict", lambda x=x, w=w: rms_norm(x, w, 1e-5)),
            (f"rms_norm {tag} + residual", "strict", lambda x=x, w=w: rms_norm(x, w, 1e-5, residual=x)),
            (f"swiglu {tag}", "strict", lambda g=gate: swiglu(g, torch.empty_like(g))),
            (f"rotary {tag}", "strict", lambda h=heads, p=positions, t=table: rotary(h, p, t, t)),
            (f"sample_head {tag}", "strict", lambda lg=logits, t=temps, sd=seeds: sample_head(lg, t, sd)),
            (
                f"sample_head {tag} + CFG",
                "strict",
                lambda lg=logits, t=temps, sd=seeds: sample_head(lg, t, sd, torch.empty_like(lg), 1.0),
            ),
        ]
    out += [
        (f"moe {str(dtype).removeprefix('torch.')} {n} tokens", "strict", lambda d=dtype, n=n: moe_case(d, n))
        for dtype in (bf16, fp32)
        for n in (1, 256, 1024)
    ]
    # One sequence's 32-token block: each row's vocabulary split as the launcher splits it on an H200.
    splits = choose_head_splits(32, 126464, BLOCK_V, H200_SMS)
    rows32 = meta(32, 126464), meta(32, dtype=fp32), meta(32, dtype=torch.int64)
    out.append(
        (
            f"sample_head bf16 32 rows, {splits} splits",
            "strict",
            lambda: sample_head(*rows32, num_splits=splits),
        )
    )
    # Controls, to show the check can fail: rows that start 2 bytes past a 16-byte boundary can be
    # read neither 16 bytes at a time nor by cp.async.
    odd = meta(256, 12289)[:, 1:]
    out.append(("swiglu bf16 rows off 16-byte alignment", "control", lambda: swiglu(odd, odd)))
    out.append(("attention bf16 K/V rows off alignment", "control", lambda: odd_attention(bf16)))
    # With 2 stages Triton loads each tile's page-table entries with blocking loads before its K/V copies.
    out.append(("paged attention bf16 B=32 2 stages", "control", lambda: paged_case(32, 4096, num_stages=2)))
    return out


def main() -> int:
    print(f"# triton {triton.__version__}, torch {torch.__version__}, sm_90a, ptxas {get_ptxas(90).version}")
    ok = True
    for name, mode, launch_with_meta in cases():
        with captured_launches() as launches:
            launch_with_meta()
        assert launches, f"{name}: the launcher launched nothing"
        for launch in launches:
            ok &= judge(name, launch, mode)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
