"""The op table: backend selection, and TritonOps agreeing with TorchOps through one small layer."""

import pytest
import torch

from kernels.ops import TorchOps, TritonOps, get_ops

pytestmark = [
    pytest.mark.interpreter,
    pytest.mark.filterwarnings("ignore:Conversion of an array with ndim:DeprecationWarning"),
]


def test_get_ops_selection():
    assert isinstance(get_ops("torch", torch.device("cuda")), TorchOps)
    assert isinstance(get_ops("triton", torch.device("cpu")), TritonOps)
    assert isinstance(get_ops("auto", torch.device("cpu")), TorchOps)
    assert isinstance(get_ops("auto", torch.device("cuda", 0)), TritonOps)
    with pytest.raises(ValueError, match="unknown kernel backend 'tritonn'"):
        get_ops("tritonn", torch.device("cpu"))


def test_triton_ops_match_torch_ops(device):
    torch_ops, triton_ops = TorchOps(), TritonOps()
    n, heads, head_dim, hidden = 9, 2, 64, 48
    x = torch.randn(n, heads * head_dim, device=device)
    res = torch.randn_like(x)
    w = torch.randn(heads * head_dim, device=device)
    for a, b in zip(torch_ops.rms_norm(x, w, 1e-5, res), triton_ops.rms_norm(x, w, 1e-5, res), strict=True):
        torch.testing.assert_close(b, a)
    angles = torch.rand(16, head_dim // 2, device=device)
    pos = torch.arange(n, device=device)
    q = x.view(n, heads, head_dim)
    torch.testing.assert_close(
        triton_ops.rotary(q, pos, angles.cos(), angles.sin()),
        torch_ops.rotary(q, pos, angles.cos(), angles.sin()),
    )
    g, u = torch.randn(2, n, hidden, device=device).unbind(0)
    torch.testing.assert_close(triton_ops.swiglu(g, u), torch_ops.swiglu(g, u))
    cu = torch.tensor([0, 4, 9], dtype=torch.int32, device=device)
    torch.testing.assert_close(
        triton_ops.attention(q, q, q, cu, cu), torch_ops.attention(q, q, q, cu, cu), rtol=1e-5, atol=1e-5
    )
    logits = torch.randn(3, 50, device=device)
    temp = torch.zeros(3, device=device)
    seeds = torch.arange(3, device=device)
    tok_a, prob_a = torch_ops.sample_head(logits, temp, seeds, logits * 0.5, 1.0)
    tok_b, prob_b = triton_ops.sample_head(logits, temp, seeds, logits * 0.5, 1.0)
    assert tok_a.tolist() == tok_b.tolist()
    torch.testing.assert_close(prob_b, prob_a)
