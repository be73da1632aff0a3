"""Triton kernels, each beside a plain-torch reference with the same signature.

One file per op: the `@triton.jit` kernel(s), a launcher that checks shapes, dtypes and strides, and
`<op>_ref`, the torch reference the model uses on CPU. Import a file's module to get both; nothing
is compiled or launched at import time.
"""
