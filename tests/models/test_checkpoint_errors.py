"""Broken checkpoints fail with a message naming the file and the key."""

import json
import shutil

import pytest

from models import CheckpointError, load_model
from models.config import LLaDAConfig


@pytest.fixture
def ckpt(tiny_ckpt, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, dst)
    return dst


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="model directory not found"):
        load_model(tmp_path / "nope")


def test_missing_shard(ckpt):
    (ckpt / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(
        CheckpointError,
        match=r"model-00002-of-00003\.safetensors: shard file missing"
        r" \(it should hold 'model\.transformer\.",
    ):
        load_model(ckpt)


def test_missing_key(ckpt):
    edit_json(
        ckpt / "model.safetensors.index.json",
        lambda d: d["weight_map"].pop("model.transformer.blocks.1.up_proj.weight"),
    )
    with pytest.raises(
        CheckpointError,
        match=r"model\.safetensors\.index\.json: missing key "
        r"'model\.transformer\.blocks\.1\.up_proj\.weight'",
    ):
        load_model(ckpt)


def test_key_listed_but_absent_from_shard(ckpt):
    key = "model.transformer.ln_f.weight"
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    wrong = next(f for f in set(index["weight_map"].values()) if f != index["weight_map"][key])
    edit_json(ckpt / "model.safetensors.index.json", lambda d: d["weight_map"].update({key: wrong}))
    with pytest.raises(
        CheckpointError, match=rf"{wrong}: key '{key}' listed in the index is not in this file"
    ):
        load_model(ckpt)


def test_wrong_shape(ckpt):
    edit_json(ckpt / "config.json", lambda d: d.update(mlp_hidden_size=128))
    with pytest.raises(
        CheckpointError,
        match=r"safetensors: key 'model\.transformer\.blocks\.\d\.(ff_proj|"
        r"up_proj|ff_out)\.weight': shape \(\d+, \d+\), expected \(\d+, \d+\)",
    ):
        load_model(ckpt)


def test_unknown_architecture(ckpt):
    edit_json(ckpt / "config.json", lambda d: d.update(architectures=["GPT2LMHeadModel"]))
    with pytest.raises(
        CheckpointError,
        match=r"config\.json: unknown architecture 'GPT2LMHeadModel' in field "
        r"'architectures' \(supported: .*\bLLaDAModelLM\b.*\)$",
    ):
        load_model(ckpt)


def test_corrupt_json(ckpt):
    (ckpt / "config.json").write_text('{"d_model": 64,')
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        load_model(ckpt)


def test_corrupt_index_json(ckpt):
    (ckpt / "model.safetensors.index.json").write_text("not json")
    with pytest.raises(CheckpointError, match=r"model\.safetensors\.index\.json: not valid JSON"):
        load_model(ckpt)


def test_index_entry_not_a_file_name(ckpt):
    key = "model.transformer.ln_f.weight"
    edit_json(ckpt / "model.safetensors.index.json", lambda d: d["weight_map"].update({key: 3}))
    with pytest.raises(
        CheckpointError,
        match=rf"model\.safetensors\.index\.json: key '{key}' maps to 3, not a shard file name",
    ):
        load_model(ckpt)


@pytest.mark.parametrize("eos", ["abc", 1.5, [7, "x"], 10**6])
def test_generation_config_eos_not_a_token_id(ckpt, eos):
    (ckpt / "generation_config.json").write_text(json.dumps({"eos_token_id": eos}))
    with pytest.raises(
        CheckpointError, match=r"generation_config\.json: field 'eos_token_id' holds .*, not a token id"
    ):
        load_model(ckpt)


def test_generation_config_null_eos_adds_nothing(ckpt):
    (ckpt / "generation_config.json").write_text(json.dumps({"eos_token_id": None}))
    lm = load_model(ckpt)
    assert lm.stop_token_ids[0] == lm.config.eos_token_id


def test_corrupt_shard(ckpt):
    (ckpt / "model-00001-of-00003.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError, match=r"model-00001-of-00003\.safetensors: cannot read safetensors"):
        load_model(ckpt)


def test_unexpected_key(ckpt):
    edit_json(
        ckpt / "model.safetensors.index.json",
        lambda d: d["weight_map"].update(
            {"model.transformer.blocks.0.q_norm.weight": "model-00001-of-00003.safetensors"}
        ),
    )
    with pytest.raises(
        CheckpointError, match=r"unexpected key 'model\.transformer\.blocks\.0\.q_norm\.weight'"
    ):
        load_model(ckpt)


BASE = json.loads(
    json.dumps(
        {
            "architectures": ["LLaDAModelLM"],
            "d_model": 64,
            "n_heads": 4,
            "n_kv_heads": 4,
            "n_layers": 2,
            "mlp_hidden_size": 96,
            "vocab_size": 100,
            "embedding_size": 100,
            "max_sequence_length": 256,
            "rope_theta": 10000.0,
            "rms_norm_eps": 1e-5,
            "weight_tying": False,
            "mask_token_id": 2,
            "eos_token_id": 1,
            "pad_token_id": 1,
            "block_type": "llama",
            "activation_type": "silu",
            "layer_norm_type": "rms",
            "rope": True,
            "alibi": False,
            "include_bias": False,
        }
    )
)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"block_type": "sequential"}, r"unsupported block_type 'sequential'"),
        ({"activation_type": "swiglu"}, r"unsupported activation_type 'swiglu'"),
        ({"layer_norm_type": "default"}, r"unsupported layer_norm_type 'default'"),
        ({"rope": False}, r"rope=False is not supported"),
        ({"alibi": True}, r"alibi=True is not supported"),
        ({"include_bias": True}, r"include_bias=True is not supported"),
        ({"attention_layer_norm": True}, r"attention_layer_norm=True is not supported"),
        ({"d_model": None}, r"missing required field 'd_model'"),
        ({"rope_theta": None}, r"missing required field 'rope_theta'"),
        ({"n_kv_heads": 3}, r"n_kv_heads 3 must divide n_heads"),
        ({"mask_token_id": 1}, r"mask_token_id must differ from pad_token_id"),
        # A string, list or float where a number or boolean belongs is named, never converted
        # (int("64") would pass, bool("false") is True, int([1]) a TypeError traceback).
        ({"d_model": "64"}, r"field 'd_model' must be an integer; got '64'"),
        ({"n_layers": [2]}, r"field 'n_layers' must be an integer; got \[2\]"),
        ({"mask_token_id": 2.5}, r"field 'mask_token_id' must be an integer; got 2\.5"),
        ({"rope_theta": "abc"}, r"field 'rope_theta' must be a number; got 'abc'"),
        ({"weight_tying": "false"}, r"field 'weight_tying' must be true or false; got 'false'"),
        ({"block_type": ["llama"]}, r"unsupported block_type \['llama'\]"),
        ({"n_heads": 0}, r"field 'n_heads' must be at least 1; got 0"),
        ({"mlp_hidden_size": -1}, r"field 'mlp_hidden_size' must be at least 1; got -1"),
        ({"max_sequence_length": -1}, r"field 'max_sequence_length' must be at least 1; got -1"),
        ({"mask_token_id": -1}, r"field 'mask_token_id' must be at least 0; got -1"),
        ({"mask_token_id": 100}, r"mask_token_id 100 is outside the embedding \(100 rows\)"),
    ],
)
def test_config_rejects_what_it_does_not_implement(change, message):
    raw = {**BASE, **change}
    with pytest.raises(CheckpointError, match=r"config\.json: " + message):
        LLaDAConfig.from_dict(raw, source="x/config.json")


def test_config_reads_optional_fields():
    raw = {k: v for k, v in BASE.items() if k not in ("n_kv_heads", "embedding_size", "mlp_hidden_size")}
    raw["mlp_ratio"] = 3
    cfg = LLaDAConfig.from_dict(raw)
    assert (cfg.n_kv_heads, cfg.embedding_size, cfg.mlp_hidden_size) == (4, 100, 192)
    raw.pop("rope")
    with pytest.raises(CheckpointError, match="missing required field 'rope'"):
        LLaDAConfig.from_dict(raw)


def test_weight_tying_checkpoint_loads(tmp_path):
    import torch

    from models.checkpoint_writer import save_llada_checkpoint
    from models.llada import LLaDAModel

    raw = {**BASE, "weight_tying": True}
    model = LLaDAModel(LLaDAConfig.from_dict(raw))
    save_llada_checkpoint(model.state_dict(), raw, tmp_path, num_shards=1)
    lm = load_model(tmp_path)
    assert "transformer.ff_out.weight" not in dict(lm.model.named_parameters())
    torch.testing.assert_close(lm.model.transformer["wte"].weight, model.transformer["wte"].weight)
