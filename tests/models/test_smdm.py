"""SMDM: a bare safetensors file in the release's layout, loaded through load_model, against a plain
re-statement of lit-gpt's TransEncoder forward; the size table and the one-line errors."""

import math
import os
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from kernels.ops import TorchOps, TritonOps
from models import CheckpointError, load_model
from models.forward_batch import PackedBatch
from models.smdm import SMDMModel
from models.smdm_config import SIZE_NAMES, SMDMConfig, size_entry
from models.writers.smdm import FILE_NAME, tokenizer_dir, write_tiny_checkpoint

ROPE_BASE, EPS = 10000.0, 1e-5


def rope_tables(n: int, hs: int, bf16: bool):
    """lit-gpt build_rope_cache: fp32 angles, tables stored in bf16 (SMDM passes dtype=bfloat16)."""
    theta = 1.0 / (ROPE_BASE ** (torch.arange(0, hs, 2) / hs))
    angles = torch.outer(torch.arange(n).float(), theta)
    cos, sin = angles.cos(), angles.sin()
    return (cos.bfloat16().float(), sin.bfloat16().float()) if bf16 else (cos, sin)


def plain_smdm_logits(sd: dict, entry: dict, ids: torch.Tensor, bf16_tables: bool = True):
    """TransEncoder as published, one sequence [T] -> [T, 32000]: per-head loops, no ops table."""
    d, nh, groups = entry["n_embd"], entry["n_head"], entry["n_query_groups"]
    hs, per_kv, t = d // nh, nh // groups, len(ids)
    cos, sin = rope_tables(t, hs, bf16_tables)

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * w

    def rope(x):  # [T, hs], flash-attn rotary with interleaved=False: halves, not pairs
        x1, x2 = x[:, : hs // 2], x[:, hs // 2 :]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    x = sd["transformer.wte.weight"][ids]
    for i in range(entry["n_layer"]):
        w = {
            k.removeprefix(f"transformer.h.{i}."): v
            for k, v in sd.items()
            if k.startswith(f"transformer.h.{i}.")
        }
        qkv = rms(x, w["norm_1.weight"]) @ w["attn.attn.weight"].T  # [T, (nh + 2 groups) * hs]
        heads = []
        for j in range(nh):  # group g = j // per_kv: rows [q_0 .. q_{per_kv-1}, k, v] of hs each
            base = (j // per_kv) * (per_kv + 2)
            q = rope(qkv[:, (base + j % per_kv) * hs :][:, :hs])
            k = rope(qkv[:, (base + per_kv) * hs :][:, :hs])
            v = qkv[:, (base + per_kv + 1) * hs :][:, :hs]
            heads.append(torch.softmax(q @ k.T / math.sqrt(hs), dim=-1) @ v)  # no mask: bidirectional
        x = x + torch.cat(heads, dim=-1) @ w["attn.proj.weight"].T
        h = rms(x, w["norm_2.weight"])
        x = (
            x
            + (F.silu(h @ w["mlp.swiglu.w1.weight"].T) * (h @ w["mlp.swiglu.w2.weight"].T))
            @ w["mlp.swiglu.w3.weight"].T
        )
    return rms(x, sd["transformer.ln_f.weight"]) @ sd["lm_head.weight"].T


@pytest.fixture(scope="module")
def smdm_file(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("smdm"))


@pytest.fixture(scope="module")
def loaded(smdm_file):
    return load_model(smdm_file, dtype="float32", device="cpu", tokenizer=tokenizer_dir(smdm_file))


def packed_logits(model, seqs):
    return model(PackedBatch.from_sequences(seqs, "cpu"), TorchOps())


def test_forward_matches_plain_transencoder(smdm_file, loaded):
    sd = {k: v.float() for k, v in load_file(str(smdm_file)).items()}
    gen = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, 32001, (n,), generator=gen) for n in (9, 17, 1)]  # 32000: the mask
    logits = packed_logits(loaded.model, seqs)
    start = 0
    for s in seqs:
        expected = plain_smdm_logits(sd, size_entry("Diff_LLaMA_6M"), s)
        torch.testing.assert_close(logits[start : start + len(s)], expected, rtol=1e-4, atol=1e-4)
        start += len(s)


def test_rotary_tables_carry_bf16_values(smdm_file, loaded):
    """The published tables are bf16: fp32 ones move the logits well beyond the tolerance above."""
    sd = {k: v.float() for k, v in load_file(str(smdm_file)).items()}
    ids = torch.randint(0, 32000, (64,), generator=torch.Generator().manual_seed(2))
    ours = packed_logits(loaded.model, [ids])
    fp32_tables = plain_smdm_logits(sd, size_entry("Diff_LLaMA_6M"), ids, bf16_tables=False)
    print("max abs diff vs fp32 tables", (ours - fp32_tables).abs().max().item())
    assert (ours - fp32_tables).abs().max() > 1e-3
    cos, _ = loaded.model.rope_tables(64, torch.device("cpu"))
    assert cos.dtype == torch.float32 and torch.equal(cos, cos.bfloat16().float())


GQA_ENTRY = {**size_entry("Diff_LLaMA_6M"), "n_layer": 2, "n_head": 4, "n_embd": 64, "n_query_groups": 2}
GQA_ENTRY.update(intermediate_size=96, vocab_size=200, padding_multiple=64)  # 256 classes + the mask


def gqa_model():
    """A random network of a made-up GQA size (no released size has GQA), built from its dict."""
    model = SMDMModel(SMDMConfig.from_dict(GQA_ENTRY, "test"))
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


def test_grouped_qkv_layout_with_gqa():
    """lit-gpt's per-group [q.., k, v] rows with 2 queries per key head."""
    model = gqa_model()
    assert model.transformer["h"][0].attn["attn"].weight.shape == ((4 + 2 * 2) * 16, 64)
    ids = torch.randint(0, 257, (11,), generator=torch.Generator().manual_seed(5))
    sd = dict(model.state_dict())
    torch.testing.assert_close(packed_logits(model, [ids]), plain_smdm_logits(sd, GQA_ENTRY, ids))


@pytest.mark.interpreter
def test_triton_ops_take_the_strided_qkv_views():
    """k and v are strided views of the fused projection: the Triton launchers (interpreted on CPU)
    accept them and agree with the torch references."""
    device = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
    model = gqa_model().to(device)
    gen = torch.Generator().manual_seed(4)
    batch = PackedBatch.from_sequences([torch.randint(0, 257, (n,), generator=gen) for n in (7, 12)], device)
    torch.testing.assert_close(model(batch, TritonOps()), model(batch, TorchOps()), rtol=1e-4, atol=1e-4)


def test_loaded_facts(loaded):
    spec = loaded.spec
    assert (spec.family, spec.mask_token_id, spec.vocab_size, spec.eos_token_id) == ("smdm", 32000, 32000, 2)
    assert (spec.n_layers, spec.n_kv_heads, spec.head_dim, spec.max_sequence_length) == (6, 4, 64, 2048)
    assert spec.stop_token_ids == (2,) and not spec.time_conditioned and not spec.shift_logits
    assert loaded.model.transformer["wte"].weight.shape == (32001, 256)
    assert loaded.tokenizer.convert_ids_to_tokens([0, 1, 2]) == ["<unk>", "<s>", "</s>"]


def test_size_table_facts():
    """Spot checks against model-formats.md 4: the released 1.1B and the 170M example."""
    big = SMDMConfig.from_dict(size_entry("Diff_LLaMA_1028M"), "t")
    assert (big.n_layer, big.n_head, big.n_embd, big.intermediate_size) == (20, 14, 1792, 7168)
    non_embedding = big.n_layer * (
        4 * big.n_embd**2 + 3 * big.n_embd * big.intermediate_size + 2 * big.n_embd
    )
    assert non_embedding + big.n_embd == 1_027_677_952
    small = SMDMConfig.from_dict(size_entry("Diff_LLaMA_170M"), "t")
    assert (small.n_layer, small.n_head, small.n_embd, small.intermediate_size) == (18, 12, 768, 3072)
    assert len(SIZE_NAMES) == 30 and all(SMDMConfig.from_dict(size_entry(n), n) for n in SIZE_NAMES)


# -- sizes and errors: one line naming the file (and the key) -----------------------------------------
@pytest.fixture
def copy_to(smdm_file, tmp_path):
    def copy(name):
        dst = tmp_path / name
        shutil.copy(smdm_file, dst)
        return dst

    return copy


def test_explicit_size_for_a_renamed_file(copy_to):
    path = copy_to("my-model.safetensors")
    with pytest.raises(
        CheckpointError,
        match=r"my-model\.safetensors: cannot tell the SMDM size .* --smdm-size Diff_LLaMA_<N>M "
        r"\(its shapes fit Diff_LLaMA_6M\)$",
    ):
        load_model(path, device="cpu")
    assert load_model(path, device="cpu", smdm_size="Diff_LLaMA_6M").config.name == "Diff_LLaMA_6M"


def test_unknown_size(copy_to):
    path = copy_to("mdm-7M-1e18.safetensors")
    with pytest.raises(
        CheckpointError, match=r"mdm-7M-1e18\.safetensors \(size Diff_LLaMA_7M from the file name\): no such"
    ):
        load_model(path, device="cpu")
    with pytest.raises(
        CheckpointError,
        match=r"\(--smdm-size Diff_LLaMA_6B\): no such SMDM size \(its shapes fit Diff_LLaMA_6M\) "
        r"\(known: Diff_LLaMA_6M,",
    ):
        load_model(path, device="cpu", smdm_size="Diff_LLaMA_6B")


def test_size_flag_on_a_directory(tmp_path):
    with pytest.raises(CheckpointError, match="--smdm-size applies only to a bare SMDM .safetensors file"):
        load_model(tmp_path, smdm_size="Diff_LLaMA_6M")


def test_size_the_weights_contradict(copy_to):
    """A 6M file under a 19M name, or a wrong --smdm-size: refused before loading, naming the fit."""
    path = copy_to("mdm-19M-1e18.safetensors")
    with pytest.raises(
        CheckpointError,
        match=r"mdm-19M-1e18\.safetensors \(size Diff_LLaMA_19M from the file name\): the weights are "
        r"Diff_LLaMA_6M's, not Diff_LLaMA_19M's: pass --smdm-size Diff_LLaMA_6M",
    ):
        load_model(path, device="cpu")
    with pytest.raises(
        CheckpointError, match=r"\(--smdm-size Diff_LLaMA_170M\): the weights are Diff_LLaMA_6M's"
    ):
        load_model(path, device="cpu", smdm_size="Diff_LLaMA_170M")
    assert load_model(path, device="cpu", smdm_size="Diff_LLaMA_6M").spec.n_layers == 6


def test_another_familys_weights_file(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"model.transformer.wte.weight": torch.zeros(4, 2)}, str(path))
    with pytest.raises(
        CheckpointError,
        match=r"model\.safetensors: no key 'transformer\.wte\.weight', so not an SMDM state dict",
    ):
        load_model(path, device="cpu")


def test_missing_key(smdm_file, tmp_path):
    tensors = load_file(str(smdm_file))
    del tensors["transformer.h.1.mlp.swiglu.w2.weight"]
    save_file(tensors, str(tmp_path / FILE_NAME))
    with pytest.raises(
        CheckpointError, match=rf"{FILE_NAME}: missing key 'transformer\.h\.1\.mlp\.swiglu\.w2\.weight'"
    ):
        load_model(tmp_path / FILE_NAME, device="cpu")


def test_wrong_shape(smdm_file, tmp_path):
    tensors = load_file(str(smdm_file))
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"].clone()  # 32001 rows: the mask class kept
    save_file(tensors, str(tmp_path / FILE_NAME))
    with pytest.raises(
        CheckpointError,
        match=rf"{FILE_NAME}: key 'lm_head\.weight': shape \(32001, 256\), expected \(32000, 256\)",
    ):
        load_model(tmp_path / FILE_NAME, device="cpu")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"parallel_residual": True}, r"src: parallel_residual=True is not supported \(only False\)"),
        ({"_mlp_class": "GptNeoxMLP"}, r"src: _mlp_class='GptNeoxMLP' is not supported \(only 'LLaMAMLP'\)"),
        ({"n_query_groups": 3}, r"src: n_query_groups 3 must divide n_head 4"),
        ({"condense_ratio": 2}, r"src: unknown SMDM config field 'condense_ratio'"),
    ],
)
def test_bad_config_field(change, message):
    with pytest.raises(CheckpointError, match=message):
        SMDMConfig.from_dict({**size_entry("Diff_LLaMA_6M"), **change}, "src")


def test_missing_config_field():
    entry = size_entry("Diff_LLaMA_6M")
    del entry["norm_eps"]
    with pytest.raises(CheckpointError, match=r"src: missing SMDM config field 'norm_eps'"):
        SMDMConfig.from_dict(entry, "src")
