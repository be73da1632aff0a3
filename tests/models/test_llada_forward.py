"""The packed LLaDA forward against a plain re-statement of the original modeling code."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from kernels.ops import TorchOps
from models import load_model
from models.llada import PackedBatch


def plain_llada_logits(sd: dict, cfg, ids: torch.Tensor) -> torch.Tensor:
    """LLaDALlamaBlock as published: [B, T] ids -> [B, T, V] logits, padded-batch SDPA, no packing."""
    p = "model.transformer."
    b, t = ids.shape
    hd, nh, nkv = cfg.head_dim, cfg.n_heads, cfg.n_kv_heads

    def rms(x, w):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps)).to(x.dtype) * w

    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float) / hd))
    freqs = torch.einsum("i,j->ij", torch.arange(t, dtype=torch.float), inv_freq)
    pos = torch.cat((freqs, freqs), dim=-1)
    sin, cos = pos.sin()[None, None], pos.cos()[None, None]

    def rope(x):
        x1, x2 = x.chunk(2, dim=-1)
        return (x.float() * cos + torch.cat((-x2, x1), dim=-1).float() * sin).to(x.dtype)

    x = F.embedding(ids, sd[p + "wte.weight"])
    for i in range(cfg.n_layers):
        w = {k[len(f"{p}blocks.{i}.") :]: v for k, v in sd.items() if k.startswith(f"{p}blocks.{i}.")}
        h = rms(x, w["attn_norm.weight"])
        q = (h @ w["q_proj.weight"].T).view(b, t, nh, hd).transpose(1, 2)
        k = (h @ w["k_proj.weight"].T).view(b, t, nkv, hd).transpose(1, 2)
        v = (h @ w["v_proj.weight"].T).view(b, t, nkv, hd).transpose(1, 2)
        q, k = rope(q), rope(k)
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.repeat_interleave(nh // nkv, dim=1)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=False, scale=1 / math.sqrt(hd))
        x = x + a.transpose(1, 2).reshape(b, t, -1) @ w["attn_out.weight"].T
        h = rms(x, w["ff_norm.weight"])
        x = x + (F.silu(h @ w["ff_proj.weight"].T) * (h @ w["up_proj.weight"].T)) @ w["ff_out.weight"].T
    return rms(x, sd[p + "ln_f.weight"]) @ sd[p + "ff_out.weight"].T


@pytest.fixture(scope="module")
def loaded(tiny_ckpt):
    return load_model(tiny_ckpt, dtype="float32", device="cpu")


def read_release(ckpt):
    """(config.json's fields the restatement reads, every tensor of every shard): straight from the
    files, so that neither the config reader nor the loader is trusted by the comparison."""
    raw = json.loads((ckpt / "config.json").read_text())
    cfg = SimpleNamespace(
        head_dim=raw["d_model"] // raw["n_heads"],
        n_heads=raw["n_heads"],
        n_kv_heads=raw["n_kv_heads"],
        n_layers=raw["n_layers"],
        rms_norm_eps=raw["rms_norm_eps"],
        rope_theta=raw["rope_theta"],
    )
    sd = {}
    for shard in sorted(ckpt.glob("*.safetensors")):
        sd.update({k: v.float() for k, v in load_file(str(shard)).items()})
    return cfg, sd


def test_forward_matches_plain_llada(loaded, tiny_ckpt):
    cfg, sd = read_release(tiny_ckpt)
    gen = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, loaded.config.vocab_size, (n,), generator=gen) for n in (7, 13, 1)]
    logits = loaded.model(PackedBatch.from_sequences(seqs, "cpu"), TorchOps())
    start = 0
    for s in seqs:
        expected = plain_llada_logits(sd, cfg, s[None])[0]
        torch.testing.assert_close(logits[start : start + len(s)], expected, rtol=1e-5, atol=1e-5)
        start += len(s)


def test_logits_index_selects_rows(loaded):
    seqs = [torch.arange(3, 12), torch.arange(20, 25)]
    batch = PackedBatch.from_sequences(seqs, "cpu")
    full = loaded.model(batch, TorchOps())
    index = torch.tensor([0, 4, 8, 10, 13])
    torch.testing.assert_close(loaded.model(batch, TorchOps(), index), full[index])


def test_loaded_model_facts(loaded):
    cfg = loaded.config
    assert cfg.n_kv_heads == 2 and cfg.n_heads == 4  # GQA in the fixture
    assert loaded.stop_token_ids[0] == cfg.eos_token_id
    eot = loaded.tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert eot in loaded.stop_token_ids
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in loaded.model.parameters())


def test_bfloat16_load_converts(tiny_ckpt):
    lm = load_model(tiny_ckpt, dtype="bfloat16", device="cpu")
    assert {p.dtype for p in lm.model.parameters()} == {torch.bfloat16}
