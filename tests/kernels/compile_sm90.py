"""Compile every kernel for sm_90 (H100/H200) on a machine without a GPU: Triton's front end, its
NVIDIA passes and the bundled ptxas run on the CPU. Catches what the interpreter lets through (tile
shapes, tl.dot constraints, types of loop-carried values, shared memory). Run with TRITON_INTERPRET
unset: `python tests/kernels/compile_sm90.py`; prints one line per variant, exit 1 on any failure.
"""

import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from kernels import attention, rms_norm, rotary, sampling_head, swiglu

TARGET = GPUTarget("cuda", 90, 32)


def compile_one(name, fn, signature, constexprs, num_warps=4, num_stages=3) -> bool:
    src = ASTSource(
        fn=fn, signature={**signature, **dict.fromkeys(constexprs, "constexpr")}, constexprs=constexprs
    )
    try:
        kernel = triton.compile(
            src, target=TARGET, options={"num_warps": num_warps, "num_stages": num_stages}
        )
    except Exception as exc:
        print(f"FAIL {name}: {type(exc).__name__}: {exc}")
        return False
    print(f"ok   {name}: shared memory {kernel.metadata.shared} B")
    return True


def main() -> int:
    ok = True
    for dt in ("bf16", "fp32"):
        ints = dict.fromkeys(
            [
                "HEAD_DIM",
                "STRIDE_QN",
                "STRIDE_QH",
                "STRIDE_KN",
                "STRIDE_KH",
                "STRIDE_VN",
                "STRIDE_VH",
            ],
            "i32",
        )
        for block_m, block_d in ((16, 128), (64, 128), (32, 64)):
            consts = {
                "NUM_HEADS": 32,
                "GROUP": 4,
                "BLOCK_M": block_m,
                "BLOCK_N": 64,
                "BLOCK_D": block_d,
                "BLOCK_B": 64,
                "UPCAST": False,
                "DOT_PRECISION": "ieee" if dt == "fp32" else "tf32",
            }
            for splits in (1, 4):
                out_ptrs = {"OUT": "*fp32" if splits > 1 else f"*{dt}", "ML": "*fp32"}
                ok &= compile_one(
                    f"attention {dt} BLOCK_M={block_m} BLOCK_D={block_d} splits={splits}",
                    attention._attention_kernel,
                    {
                        **{n: f"*{dt}" for n in ("Q", "K", "V")},
                        **out_ptrs,
                        "CU_Q": "*i32",
                        "CU_K": "*i32",
                        "NUM_SEQS": "i32",
                        "NUM_ROWS": "i32",
                        **ints,
                        "QK_SCALE": "fp32",
                    },
                    {**consts, "NUM_SPLITS": splits},
                    num_stages=2,
                )
        ok &= compile_one(
            f"attention split combine {dt}",
            attention._combine_splits_kernel,
            {"PART": "*fp32", "ML": "*fp32", "OUT": f"*{dt}", "NUM_ROWS": "i32", "HEAD_DIM": "i32"},
            {"NUM_HEADS": 32, "NUM_SPLITS": 8, "BLOCK_S": 8, "BLOCK_D": 128, "UPCAST": False},
        )
        for has_res in (False, True):
            ok &= compile_one(
                f"rms_norm {dt} residual={has_res}",
                rms_norm._rms_norm_kernel,
                {
                    "X": f"*{dt}",
                    "RES": f"*{dt}",
                    "W": f"*{dt}",
                    "Y": f"*{dt}",
                    "H": f"*{dt}",
                    "D": "i32",
                    "STRIDE_X": "i32",
                    "STRIDE_R": "i32",
                    "EPS": "fp32",
                },
                {"HAS_RESIDUAL": has_res, "BLOCK_D": 4096, "INTERP": False},
                num_warps=8,
            )
        ok &= compile_one(
            f"swiglu {dt}",
            swiglu._swiglu_kernel,
            {
                "GATE": f"*{dt}",
                "UP": f"*{dt}",
                "OUT": f"*{dt}",
                "NUM_COLS": "i32",
                "STRIDE_G": "i32",
                "STRIDE_U": "i32",
            },
            {"BLOCK": 1024, "INTERP": False},
        )
        ok &= compile_one(
            f"rotary {dt}",
            rotary._rotary_kernel,
            {
                "X": f"*{dt}",
                "POS": "*i64",
                "COS": "*fp32",
                "SIN": "*fp32",
                "OUT": f"*{dt}",
                "NUM_HEADS": "i32",
                "HALF": "i32",
                "STRIDE_XN": "i32",
                "STRIDE_XH": "i32",
            },
            {"BLOCK_H": 16, "BLOCK_HALF": 64, "INTERP": False},
        )
        for has_uncond in (False, True):
            ok &= compile_one(
                f"sample_head {dt} cfg={has_uncond}",
                sampling_head._sample_head_kernel,
                {
                    "LOGITS": f"*{dt}",
                    "UNCOND": f"*{dt}",
                    "TEMP": "*fp32",
                    "SEEDS": "*i64",
                    "TOKENS": "*i64",
                    "PROBS": "*fp32",
                    "V": "i32",
                    "STRIDE_L": "i32",
                    "STRIDE_U": "i32",
                    "CFG_W1": "fp32",
                },
                {"HAS_UNCOND": has_uncond, "BLOCK_V": 2048},
                num_warps=8,
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
