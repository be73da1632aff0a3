"""Broken LLaDA-MoE checkpoints fail with one line naming the file and the key."""

import json
import shutil

import pytest

from models import CheckpointError, load_model
from models.llada_moe_config import LLaDAMoEConfig
from models.writers.llada_moe import write_tiny_checkpoint

INDEX = "model.safetensors.index.json"


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    root = tmp_path_factory.mktemp("lladamoe_errors")
    return {
        "unfused": write_tiny_checkpoint(root / "unfused"),
        "fused": write_tiny_checkpoint(root / "fused", fused=True),
    }


@pytest.fixture(params=["unfused", "fused"])
def ckpt(request, originals, tmp_path):
    dst = tmp_path / request.param
    shutil.copytree(originals[request.param], dst)
    return dst


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_missing_expert_key(ckpt):
    key = "model.layers.1.mlp." + ("w1" if ckpt.name == "fused" else "experts.5.up_proj.weight")
    edit_json(ckpt / INDEX, lambda d: d["weight_map"].pop(key))
    with pytest.raises(CheckpointError, match=rf"{INDEX}: missing key '{key}'$".replace(".", r"\.")):
        load_model(ckpt, device="cpu")


def test_wrong_expert_shape(ckpt):
    edit_json(ckpt / "config.json", lambda d: d.update(expert_intermediate_size=40))
    key = r"model\.layers\.\d\.mlp\." + (
        r"w[12]" if ckpt.name == "fused" else r"experts\.\d\.\w+_proj\.weight"
    )
    with pytest.raises(
        CheckpointError, match=rf"safetensors: key '{key}': shape \([\d, ]+\), expected \([\d, ]+\)$"
    ):
        load_model(ckpt, device="cpu")


def test_layout_of_the_other_architecture_is_named(ckpt):
    """An unfused directory labelled fused (or the reverse): the first expected key is missing."""
    other = "LLaDAMoEModelLM" if ckpt.name == "fused" else "FusedLLaDAMoEModelLM"
    edit_json(ckpt / "config.json", lambda d: d.update(architectures=[other]))
    key = r"experts\.0\.down_proj\.weight" if ckpt.name == "fused" else "w1"
    with pytest.raises(
        CheckpointError, match=rf"missing key 'model\.layers\.0\.mlp\.{key}' \(and \d+ more\)"
    ):
        load_model(ckpt, device="cpu")


def test_expert_bias_the_config_does_not_enable(ckpt):
    """A checkpoint trained with router expert bias whose config lost the flag: refused, not ignored."""
    shard = json.loads((ckpt / INDEX).read_text())["weight_map"]["model.layers.0.mlp.gate.weight"]
    edit_json(ckpt / INDEX, lambda d: d["weight_map"].update({"model.layers.0.mlp.expert_bias": shard}))
    with pytest.raises(CheckpointError, match=r"unexpected key 'model\.layers\.0\.mlp\.expert_bias'"):
        load_model(ckpt, device="cpu")


def test_missing_shard_names_a_key_it_holds(ckpt):
    (ckpt / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(
        CheckpointError, match=r"00002\.safetensors: shard file missing \(it should hold 'model\."
    ):
        load_model(ckpt, device="cpu")


@pytest.fixture(scope="module")
def base_config(originals):
    return json.loads((originals["unfused"] / "config.json").read_text())


@pytest.mark.parametrize(
    "change, message",
    [
        ({"hidden_act": "gelu"}, r"hidden_act='gelu' is not supported \(only 'silu'\)"),
        ({"rope_scaling": {"type": "linear", "factor": 2.0}}, r"rope_scaling=.* is not supported"),
        ({"moe_router_score_function": "sigmoid"}, r"moe_router_score_function='sigmoid' is not supported"),
        ({"moe_layer_freq": [1]}, r"moe_layer_freq must list 0 \(dense\) or 1 \(MoE\) for each of the 2"),
        ({"moe_layer_freq": [1, 2]}, r"moe_layer_freq must list"),
        ({"num_experts": None}, r"missing required field 'num_experts'"),
        ({"partial_rotary_factor": None}, r"missing required field 'partial_rotary_factor'"),
        ({"partial_rotary_factor": 0.2}, r"partial_rotary_factor 0\.2 gives 3 rotary channels"),
        ({"partial_rotary_factor": 0.0625}, r"partial_rotary_factor 0\.0625 gives 1 rotary channels"),
        ({"qk_layernorm": None}, r"missing required field 'qk_layernorm'"),
        ({"num_experts_per_tok": 9}, r"num_experts_per_tok 9 must be in \[1, num_experts 8\]"),
        ({"num_key_value_heads": 3}, r"num_key_value_heads 3 must divide num_attention_heads 4"),
        ({"clip_qkv": -1}, r"clip_qkv must be positive or null"),
        ({"architectures": "LLaDAMoEModelLM"}, r"field 'architectures' must be a list"),
        # Wrong JSON types are named, never converted (bool("false") is True, int([1]) a traceback).
        ({"hidden_size": "64"}, r"field 'hidden_size' must be an integer; got '64'"),
        ({"num_experts": [8]}, r"field 'num_experts' must be an integer; got \[8\]"),
        ({"num_experts_per_tok": 1.5}, r"field 'num_experts_per_tok' must be an integer; got 1\.5"),
        ({"rope_theta": "abc"}, r"field 'rope_theta' must be a number; got 'abc'"),
        ({"clip_qkv": "x"}, r"field 'clip_qkv' must be a number; got 'x'"),
        ({"tie_word_embeddings": "false"}, r"field 'tie_word_embeddings' must be true or false"),
        ({"qk_layernorm": 1}, r"field 'qk_layernorm' must be true or false; got 1"),
        ({"shared_expert_intermediate_size": "abc"}, r"field 'shared_expert_intermediate_size' must be an"),
        ({"mask_token_id": "abc"}, r"field 'mask_token_id' must be an integer; got 'abc'"),
        ({"eos_token_id": [1.5]}, r"field 'eos_token_id' must be an integer; got 1\.5"),
        ({"num_attention_heads": 0}, r"field 'num_attention_heads' must be at least 1; got 0"),
        ({"expert_intermediate_size": -1}, r"field 'expert_intermediate_size' must be at least 1"),
        ({"vocab_size": -1}, r"field 'vocab_size' must be at least 1; got -1"),
        ({"max_position_embeddings": -1}, r"field 'max_position_embeddings' must be at least 1"),
    ],
)
def test_config_rejects_what_it_does_not_implement(base_config, change, message):
    with pytest.raises(CheckpointError, match=r"^x/config\.json: " + message):
        LLaDAMoEConfig.from_dict({**base_config, **change}, source="x/config.json")


def test_dense_size_needed_only_with_a_dense_layer(base_config):
    raw = {k: v for k, v in base_config.items() if k != "dense_intermediate_size"}
    assert LLaDAMoEConfig.from_dict(raw).dense_intermediate_size is None
    with pytest.raises(CheckpointError, match=r"missing required field 'dense_intermediate_size'"):
        LLaDAMoEConfig.from_dict({**raw, "moe_layer_freq": [0, 1]})


def test_shared_expert_field_must_be_present(base_config):
    """Its class default (-1) is no size: absent is an error, null means no shared expert."""
    raw = {k: v for k, v in base_config.items() if k != "shared_expert_intermediate_size"}
    with pytest.raises(CheckpointError, match=r"missing required field 'shared_expert_intermediate_size'"):
        LLaDAMoEConfig.from_dict(raw)


def test_fields_the_reference_ignores_are_ignored(base_config):
    raw = {**base_config, "norm_topk_prob": True, "routed_scaling_factor": 2.5, "router_num_group": 4}
    assert LLaDAMoEConfig.from_dict(raw) == LLaDAMoEConfig.from_dict(base_config)


def test_token_ids_config_then_tokenizer_then_published(base_config):
    class Tok:
        mask_token_id, eos_token_id = 11, 12

    raw = {**base_config, "vocab_size": 157184}
    raw.pop("eos_token_id")
    assert LLaDAMoEConfig.from_dict(raw).with_tokenizer(None).model_spec().mask_token_id == 156895
    cfg = LLaDAMoEConfig.from_dict(raw).with_tokenizer(None)
    assert (cfg.mask_token_id, cfg.eos_token_id) == (156895, 156892)
    cfg = LLaDAMoEConfig.from_dict(raw).with_tokenizer(Tok())
    assert (cfg.mask_token_id, cfg.eos_token_id) == (11, 12)
    cfg = LLaDAMoEConfig.from_dict({**raw, "mask_token_id": 7, "eos_token_id": 8}).with_tokenizer(Tok())
    assert (cfg.mask_token_id, cfg.eos_token_id) == (7, 8)


def test_published_mask_id_outside_a_small_vocabulary(originals, tmp_path):
    """A tokenizer without a mask token and a config without mask_token_id: 156895 does not fit."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(originals["unfused"], ckpt)
    edit_json(ckpt / "tokenizer_config.json", lambda d: d.pop("mask_token"))
    with pytest.raises(
        CheckpointError,
        match=rf"^{ckpt}/config\.json: mask token id 156895 is outside the vocabulary \(vocab_size \d+\); "
        r"set 'mask_token_id'$",
    ):
        load_model(ckpt, device="cpu")
