"""LLaDA-MoE logits (both layouts, every config feature) against the plain published forward."""

import json
import shutil

import pytest
import torch
from lladamoe_reference import FEATURED, plain_logits, read_checkpoint

from kernels.ops import TorchOps, TritonOps
from models import load_model
from models.forward_batch import PackedBatch
from models.llada_moe import LLaDAMoEModel
from models.writers.llada_moe import ROLE_END, write_tiny_checkpoint

# Tied head, no QK norm, plain multi-head attention, top-3.
TIED = {
    "tie_word_embeddings": True,
    "qk_layernorm": False,
    "num_key_value_heads": 4,
    "num_experts_per_tok": 3,
}
VARIANTS = {"release": {}, "featured": FEATURED, "tied": TIED}
SEQS = [torch.arange(3, 10), torch.arange(40, 53), torch.tensor([77])]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """name -> checkpoint dir: each variant unfused, and the release and featured ones fused too."""
    root, out = tmp_path_factory.mktemp("lladamoe"), {}
    for name, overrides in VARIANTS.items():
        out[name] = write_tiny_checkpoint(root / name, overrides=overrides)
        if name != "tied":
            out[name + "-fused"] = write_tiny_checkpoint(
                root / (name + "-fused"), overrides=overrides, fused=True
            )
    return out


def packed_logits(model_dir, ops=None, index=None):
    lm = load_model(model_dir, dtype="float32", device="cpu")
    return lm.model(PackedBatch.from_sequences(SEQS, "cpu"), ops or TorchOps(), index)


@pytest.mark.parametrize("name", ["release", "release-fused", "featured", "featured-fused", "tied"])
def test_logits_match_the_published_forward(ckpts, name):
    cfg, sd = read_checkpoint(ckpts[name])
    logits = packed_logits(ckpts[name])
    assert logits.shape == (sum(map(len, SEQS)), cfg["vocab_size"])
    start = 0
    for seq in SEQS:
        expected = plain_logits(cfg, sd, seq)
        torch.testing.assert_close(logits[start : start + len(seq)], expected, rtol=1e-4, atol=1e-4)
        start += len(seq)


def test_fused_layout_holds_the_same_model(ckpts):
    """The writer fuses the same random experts: both layouts must load to identical weights."""
    for name in ("release", "featured"):
        torch.testing.assert_close(packed_logits(ckpts[name + "-fused"]), packed_logits(ckpts[name]))
    lm = load_model(ckpts["featured-fused"], dtype="float32", device="cpu")
    _, sd = read_checkpoint(ckpts["featured"])
    mlp = lm.model.model["layers"][2].mlp
    inter = lm.config.expert_intermediate_size
    torch.testing.assert_close(mlp.w_gate_up[5, :inter], sd["model.layers.2.mlp.experts.5.gate_proj.weight"])
    torch.testing.assert_close(mlp.w_gate_up[5, inter:], sd["model.layers.2.mlp.experts.5.up_proj.weight"])
    torch.testing.assert_close(mlp.w_down[5], sd["model.layers.2.mlp.experts.5.down_proj.weight"])


class RecordingOps(TorchOps):
    """The torch ops, keeping the experts each `moe` call was given."""

    def __init__(self):
        self.experts = []

    def moe(self, h, w_gate_up, w_down, weights, experts):
        self.experts.append(experts)
        return super().moe(h, w_gate_up, w_down, weights, experts)


def test_routing_of_the_test_batch_is_uneven(ckpts):
    """The packed batch above loads the experts very unevenly, so the comparison covers experts
    with many tokens and with few."""
    ops = RecordingOps()
    packed_logits(ckpts["featured"], ops)
    assert len(ops.experts) == 2  # the two MoE layers
    for experts in ops.experts:
        counts = torch.bincount(experts.flatten(), minlength=8)
        assert counts.sum() == 2 * 21 and counts.max() >= 2 * counts.min() + 2, counts


@pytest.mark.parametrize("name", ["featured", "release-fused"])
def test_one_token_leaves_most_experts_idle(ckpts, name):
    cfg, sd = read_checkpoint(ckpts[name])
    lm = load_model(ckpts[name], dtype="float32", device="cpu")
    ops, seq = RecordingOps(), torch.tensor([77])
    logits = lm.model(PackedBatch.from_sequences([seq], "cpu"), ops)
    assert all(len(e.unique()) == cfg["num_experts_per_tok"] for e in ops.experts)  # 6 of 8 idle
    torch.testing.assert_close(logits, plain_logits(cfg, sd, seq), rtol=1e-4, atol=1e-4)


def test_features_change_the_logits(ckpts, tmp_path):
    """Each option the featured variant turns on moves the logits (the comparison above sees it)."""
    base = packed_logits(ckpts["featured"])
    for change in ({"clip_qkv": None}, {"partial_rotary_factor": 1.0}):
        other = tmp_path / str(len(list(tmp_path.iterdir())))
        shutil.copytree(ckpts["featured"], other)
        cfg = json.loads((other / "config.json").read_text())
        (other / "config.json").write_text(json.dumps({**cfg, **change}))
        assert not torch.allclose(packed_logits(other), base, atol=1e-3), change


def test_logits_index_selects_rows(ckpts):
    index = torch.tensor([0, 6, 7, 19, 20])
    torch.testing.assert_close(
        packed_logits(ckpts["featured"], index=index), packed_logits(ckpts["featured"])[index]
    )


def test_loaded_model_facts(ckpts):
    lm = load_model(ckpts["featured"], dtype="float32", device="cpu")
    tok, spec = lm.tokenizer, lm.spec
    assert spec.family == "llada_moe" and not spec.shift_logits and not spec.time_conditioned
    assert spec.mask_token_id == tok.mask_token_id  # config.json names none: the tokenizer's
    assert spec.stop_token_ids == (tok.eos_token_id, tok.convert_tokens_to_ids(ROLE_END))
    assert (spec.n_layers, spec.n_kv_heads, spec.head_dim) == (3, 2, 16)
    assert spec.vocab_size == len(tok) and spec.max_sequence_length == 512
    assert lm.model.rotary_dim == 8 and lm.model.rope_theta == 50000.0
    layers = lm.model.model["layers"]
    assert [type(layer.mlp).__name__ for layer in layers] == ["SparseMoE", "SwiGLU", "SparseMoE"]
    assert layers[1].shared_expert is None and layers[2].shared_expert is not None
    assert "lm_head.weight" not in dict(load_model(ckpts["tied"], device="cpu").model.named_parameters())


def test_bfloat16_load_converts(ckpts):
    lm = load_model(ckpts["featured-fused"], dtype="bfloat16", device="cpu")
    assert {p.dtype for p in lm.model.parameters()} == {torch.bfloat16}
    logits = lm.model(PackedBatch.from_sequences(SEQS, "cpu"), TorchOps())
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()


def test_dense_architecture_name_with_num_experts_loads_as_moe(ckpts, tmp_path):
    """LLaDA-MoE ships model_type "llada": a copy whose architectures says LLaDAModelLM too is
    recognised by its num_experts field."""
    other = tmp_path / "renamed"
    shutil.copytree(ckpts["release"], other)
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "architectures": ["LLaDAModelLM"]}))
    lm = load_model(other, dtype="float32", device="cpu")
    assert isinstance(lm.model, LLaDAMoEModel)
    torch.testing.assert_close(
        lm.model(PackedBatch.from_sequences(SEQS, "cpu"), TorchOps()), packed_logits(ckpts["release"])
    )


def test_mask_id_from_config_wins_over_the_tokenizer(ckpts, tmp_path):
    other = tmp_path / "with_mask"
    shutil.copytree(ckpts["release"], other)
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "mask_token_id": 300, "eos_token_id": 5}))
    spec = load_model(other, device="cpu").spec
    assert (spec.mask_token_id, spec.eos_token_id, spec.stop_token_ids) == (300, 5, (5, 2))


@pytest.mark.interpreter
def test_forward_with_triton_kernels_matches_torch(ckpts):
    """The grouped-expert kernel (interpreted) in the model: same logits as the torch path."""
    index = torch.tensor([0, 5, 9, 12, 20])
    for name in ("featured", "release-fused"):
        expected = packed_logits(ckpts[name], TorchOps(), index)
        torch.testing.assert_close(
            packed_logits(ckpts[name], TritonOps(), index), expected, rtol=1e-4, atol=1e-4
        )
