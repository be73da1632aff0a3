"""Fixtures for the kernel tests: interpreter switch, device, seeds, poisoned allocations, tolerance.

Triton picks interpreter or compiler when `@triton.jit` runs (at import of kernels/), so the switch
is set here before anything imports kernels/: without CUDA, kernels run on CPU tensors through
TRITON_INTERPRET=1; with CUDA (and TRITON_INTERPRET unset) the same small tests run compiled on the
GPU, and the `gpu` tests add full LLaDA-8B shapes.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

import pytest  # noqa: E402


@pytest.fixture
def device() -> torch.device:
    """Where the small interpreter-tier tests put their tensors."""
    return torch.device("cpu" if INTERPRET else "cuda")


@pytest.fixture
def cuda_device() -> torch.device:
    """For `gpu` tests: skips unless kernels run compiled on a CUDA device."""
    if INTERPRET or not torch.cuda.is_available():
        pytest.skip("needs CUDA with TRITON_INTERPRET unset")
    return torch.device("cuda")


@pytest.fixture(autouse=True)
def fixed_seed():
    torch.manual_seed(1234)


@pytest.fixture(autouse=True)
def poisoned_empty():
    """torch.empty fills floats with NaN and ints with their max: unwritten outputs fail the checks."""
    was_on = torch.are_deterministic_algorithms_enabled()
    was_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    was_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.utils.deterministic.fill_uninitialized_memory = was_fill
    torch.use_deterministic_algorithms(was_on, warn_only=was_warn)


def _max_err(a: torch.Tensor, b: torch.Tensor) -> tuple[float, tuple[int, ...]]:
    diff = (a.float() - b.float()).abs()
    flat = int(torch.argmax(diff.flatten()))
    return float(diff.flatten()[flat]), tuple(
        int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape)
    )


def check_tolerance(name: str, out: torch.Tensor, ref_low: torch.Tensor, ref_fp32: torch.Tensor) -> None:
    """DESIGN.md section 5: the kernel's error against the fp32 reference is at most about twice the
    error of the torch reference run in the same low dtype (plus a tiny absolute epsilon)."""
    assert out.shape == ref_fp32.shape, f"{name}: shape {tuple(out.shape)} vs {tuple(ref_fp32.shape)}"
    assert out.dtype == ref_low.dtype, f"{name}: dtype {out.dtype} vs {ref_low.dtype}"
    bad = ~torch.isfinite(out)
    assert not bad.any(), (
        f"{name}: {int(bad.sum())} non-finite outputs (unwritten?), first at {bad.nonzero()[0].tolist()}"
    )
    err_kernel, where = _max_err(out, ref_fp32)
    err_ref, _ = _max_err(ref_low, ref_fp32)
    eps = 1e-5 * (1.0 + float(ref_fp32.abs().max()))
    limit = 2.0 * err_ref + eps
    assert err_kernel <= limit, (
        f"{name}: max |kernel - fp32 ref| = {err_kernel:.3g} at {where} "
        f"(kernel {float(out[where]):.6g}, fp32 ref {float(ref_fp32[where]):.6g}, "
        f"low-precision ref {float(ref_low[where]):.6g}) > limit {limit:.3g} "
        f"(2 x torch-ref error {err_ref:.3g} + {eps:.2g})"
    )


@pytest.fixture
def tolerance():
    return check_tolerance
