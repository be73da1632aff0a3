"""Downcast helper shared by the kernels: fp32 -> output dtype with round-to-nearest-even everywhere.

Why: triton 3.6's interpreter converts fp32 -> bf16 by truncating the mantissa (and its RTNE path
does not carry into the exponent), while the GPU rounds to nearest even. Under TRITON_INTERPRET=1
the bf16 case is done here with integer ops (add 0x7FFF + lsb, keep the high half), so CPU tests
see the GPU's rounding. Compiled kernels use the plain `.to()`. NaN inputs are not handled.
"""

import os

import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def cast_rne(x, DST: tl.constexpr, EMULATE: tl.constexpr):
    """x (fp32) -> DST; EMULATE is the INTERPRET flag, passed down as a kernel constexpr."""
    if EMULATE and DST == tl.bfloat16:
        bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return x.to(DST)
