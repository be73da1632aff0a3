"""Counter-based random numbers in plain torch: the same (key, counter) always gives the same value,
on any device and whatever else is computed beside it.

`mix64` is the SplitMix64 finalizer (Steele, Lea and Flood 2014) on int64 tensors, with wrapping
multiplication and logical right shifts emulated by masking. `uniform64(keys, cols)` hashes each
(key, column) pair into a float64 uniform in (0, 1) with 53 random bits. The engine keys every draw
by (request seed, step, position, stream): the host mixes seed and step into a per-request key
(`mix64_int`), the device mixes in the position (`row_keys`), and streams are column ranges of
`uniform64` (the vocabulary for Gumbel noise, negative columns for the engine's other draws). So a
request's randomness depends on nothing but itself;
the Triton sampling head draws with Philox on its own keys (same law, other samples).
"""

from __future__ import annotations

import torch

_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed 64-bit integer
_M1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_M2 = -7723592293110705685  # 0x94D049BB133111EB
_MASK = (1 << 64) - 1


def _shr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    x = (x ^ _shr(x, 30)) * _M1
    x = (x ^ _shr(x, 27)) * _M2
    return x ^ _shr(x, 31)


def mix64_int(x: int) -> int:
    """`mix64` on one Python integer (host side), returned as a signed 64-bit value."""
    x &= _MASK
    x = ((x ^ (x >> 30)) * (_M1 & _MASK)) & _MASK
    x = ((x ^ (x >> 27)) * (_M2 & _MASK)) & _MASK
    x ^= x >> 31
    return x - (1 << 64) if x >> 63 else x


def row_keys(base: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Per-row keys: base [M] int64 (a per-request key, see `mix64_int`) mixed with positions [M]."""
    return mix64(base + positions * _GOLDEN)


def uniform64(keys: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """keys [R] int64, cols [C] int64 -> [R, C] float64 uniforms in (0, 1), 53 random bits each."""
    h = mix64(keys[:, None] + (cols[None, :] + 1) * _GOLDEN)
    return (_shr(h, 11).double() + 0.5) * (2.0**-53)
