"""RADD: a tiny checkpoint in the released hub-mixin layout, loaded through the normal path, against
a plain restatement of the published forward (ML-GSAI/RADD model/transformer.py, rotary.py); its
broken files; generation through the engine (LLM)."""

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from engine import LLM, SamplingParams
from kernels.ops import TorchOps
from models import CheckpointError, load_model
from models.forward_batch import PackedBatch
from models.radd import RADDConfig
from models.writers.radd import tokenizer_dir, write_tiny_checkpoint

TOKENS = 300  # the tiny checkpoint's `tokens`: mask id 300, <|endoftext|> 299


def published_radd(sd: dict, config: dict, ids: torch.Tensor) -> torch.Tensor:
    """RADD.logits as published, one sequence [T] -> [T, tokens + 1] (the last channel: mask).

    LayerNormWot: fp32 layer_norm without affine (eps 1e-5), then * weight + bias; DDiTBlockWot:
    qkv split 'b s (three h d)', rotary on q and k from the file's inv_freq (cos = 1, sin = 0 on v),
    SDPA with no mask and its default scale, GELU(tanh) MLP; DDitFinalLayerWot: norm, linear."""
    m = config["model"]
    d, h = m["hidden_size"], m["n_heads"]
    hd, t = d // h, ids.shape[0]

    def norm(x, name):
        return F.layer_norm(x.float(), [d]) * sd[name + ".weight"] + sd[name + ".bias"]

    freqs = torch.arange(t, dtype=torch.float)[:, None] * sd["rotary_emb.inv_freq"][None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]  # [T, 1, hd]

    def rope(x):  # [T, H, hd]
        x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
        return x * cos + torch.cat((-x2, x1), dim=-1) * sin

    x = sd["vocab_embed.embedding"][ids]
    for i in range(m["n_blocks"]):
        p = f"blocks.{i}."
        qkv = (norm(x, p + "norm1") @ sd[p + "attn_qkv.weight"].T).view(t, 3, h, hd)
        q, k, v = rope(qkv[:, 0]), rope(qkv[:, 1]), qkv[:, 2]
        a = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1))
        x = x + a.transpose(0, 1).reshape(t, d) @ sd[p + "attn_out.weight"].T
        y = F.linear(norm(x, p + "norm2"), sd[p + "mlp.0.weight"], sd[p + "mlp.0.bias"])
        x = x + F.linear(F.gelu(y, approximate="tanh"), sd[p + "mlp.2.weight"], sd[p + "mlp.2.bias"])
    x = norm(x, "output_layer.norm_final")
    return F.linear(x, sd["output_layer.linear.weight"], sd["output_layer.linear.bias"])


@pytest.fixture(scope="module")
def radd_dir(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_radd"))


@pytest.fixture(scope="module")
def loaded(radd_dir):
    return load_model(radd_dir, dtype="float32", device="cpu", tokenizer=tokenizer_dir(radd_dir))


def test_released_layout(radd_dir):
    config = json.loads((radd_dir / "config.json").read_text())
    assert "architectures" not in config and config["tokens"] == TOKENS
    assert config["model"]["type"] == "ddit_wot" and config["noise"]["type"] == "loglinear"
    assert sorted(p.name for p in radd_dir.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    sd = load_file(radd_dir / "model.safetensors")
    assert sd["vocab_embed.embedding"].shape == (TOKENS + 1, 64)
    assert sd["blocks.1.attn_qkv.weight"].shape == (192, 64)
    assert sd["output_layer.linear.bias"].shape == (TOKENS + 1,)
    assert sd["rotary_emb.inv_freq"].shape == (8,)


def test_forward_matches_published_radd(loaded, radd_dir):
    sd = load_file(radd_dir / "model.safetensors")
    config = json.loads((radd_dir / "config.json").read_text())
    gen = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, TOKENS + 1, (n,), generator=gen) for n in (7, 33, 1)]  # mask ids too
    logits = loaded.model(PackedBatch.from_sequences(seqs, "cpu"), TorchOps())
    assert logits.shape == (41, TOKENS)
    start = 0
    for s in seqs:
        expected = published_radd(sd, config, s)
        ours = logits[start : start + len(s)]
        torch.testing.assert_close(ours, expected[:, :TOKENS], rtol=1e-5, atol=1e-5)
        # RADD.forward's output: log-softmax over the clean classes, the mask channel dropped
        torch.testing.assert_close(
            ours.log_softmax(-1), expected[:, :TOKENS].log_softmax(-1), rtol=1e-5, atol=1e-5
        )
        start += len(s)


def test_logits_index_selects_rows(loaded):
    batch = PackedBatch.from_sequences([torch.arange(3, 12), torch.full((5,), TOKENS)], "cpu")
    full = loaded.model(batch, TorchOps())
    index = torch.tensor([0, 4, 8, 10, 13])
    torch.testing.assert_close(loaded.model(batch, TorchOps(), index), full[index])


def test_loaded_facts(loaded):
    spec = loaded.spec
    assert (spec.family, spec.mask_token_id, spec.vocab_size) == ("radd", TOKENS, TOKENS)
    assert spec.eos_token_id == TOKENS - 1 == loaded.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert spec.stop_token_ids == (TOKENS - 1,)
    assert not spec.time_conditioned and not spec.shift_logits
    assert (spec.max_sequence_length, spec.n_layers, spec.n_kv_heads, spec.head_dim) == (1024, 2, 4, 16)
    assert loaded.tokenizer.chat_template is None


def test_bfloat16_load(radd_dir):
    lm = load_model(radd_dir, dtype="bfloat16", device="cpu", tokenizer=tokenizer_dir(radd_dir))
    assert {p.dtype for p in lm.model.parameters()} == {torch.bfloat16}
    ids = torch.arange(0, 20)
    assert torch.isfinite(lm.model(PackedBatch.from_sequences([ids], "cpu"), TorchOps())).all()


# -- broken files ------------------------------------------------------------------------------------
@pytest.fixture
def ckpt(radd_dir, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(radd_dir, dst)
    return dst


def rewrite_weights(ckpt, change):
    sd = load_file(ckpt / "model.safetensors")
    change(sd)
    save_file(sd, str(ckpt / "model.safetensors"))


def edit_config(ckpt, change):
    config = json.loads((ckpt / "config.json").read_text())
    change(config)
    (ckpt / "config.json").write_text(json.dumps(config))


def test_missing_key(ckpt):
    rewrite_weights(ckpt, lambda sd: sd.pop("blocks.1.mlp.2.bias"))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing key 'blocks\.1\.mlp\.2\.bias'$"):
        load_model(ckpt)


def test_wrong_shape(ckpt):
    rewrite_weights(ckpt, lambda sd: sd.update({"blocks.0.attn_qkv.weight": torch.zeros(128, 64)}))
    with pytest.raises(
        CheckpointError,
        match=r"model\.safetensors: key 'blocks\.0\.attn_qkv\.weight': "
        r"shape \(128, 64\), expected \(192, 64\)",
    ):
        load_model(ckpt)


def test_config_disagreeing_with_weights(ckpt):
    edit_config(ckpt, lambda c: c.update(tokens=TOKENS + 1))
    with pytest.raises(
        CheckpointError, match=r"key 'vocab_embed\.embedding': shape \(301, 64\), expected \(302, 64\)"
    ):
        load_model(ckpt)


def test_time_conditioned_keys_are_unexpected(ckpt):
    """A SEDD-style file (sigma embedding, adaLN) is not RADD's network."""
    rewrite_weights(ckpt, lambda sd: sd.update({"sigma_map.mlp.0.weight": torch.zeros(128, 256)}))
    with pytest.raises(CheckpointError, match=r"unexpected key 'sigma_map\.mlp\.0\.weight'"):
        load_model(ckpt)


def test_inv_freq_is_optional(ckpt):
    rewrite_weights(ckpt, lambda sd: sd.pop("rotary_emb.inv_freq"))
    assert load_model(ckpt).spec.family == "radd"


def test_config_without_model_or_architectures(ckpt):
    edit_config(ckpt, lambda c: c.pop("model"))
    with pytest.raises(CheckpointError, match=r"config\.json: field 'architectures' must be a list"):
        load_model(ckpt)


BASE = {
    "tokens": 50257,
    "noise": {"type": "loglinear"},
    "model": {
        "name": "small_radd",
        "type": "ddit_wot",
        "hidden_size": 768,
        "cond_dim": 128,
        "length": 1024,
        "n_blocks": 12,
        "n_heads": 12,
        "dropout": 0.02,
        "use_checkpoint": False,
        "dtype": "float16",
    },
}


def with_model(**change):
    return {**BASE, "model": {k: v for k, v in {**BASE["model"], **change}.items() if v is not None}}


@pytest.mark.parametrize(
    "raw, message",
    [
        (with_model(type="ddit"), r"model\.type='ddit' is not supported \(only 'ddit_wot'"),
        (with_model(type=None), r"model\.type=None is not supported"),
        (with_model(n_heads=None), r"missing required field 'model\.n_heads'"),
        (with_model(hidden_size="768"), r"field 'model\.hidden_size' must be a positive integer, got '768'"),
        (with_model(n_heads=7), r"model\.n_heads 7 must divide model\.hidden_size 768"),
        (with_model(mlp_ratio=8), r"unsupported field 'model\.mlp_ratio'"),
        ({**BASE, "tokens": None}, r"missing required field 'tokens'"),
        ({**BASE, "tokens": 0}, r"field 'tokens' must be a positive integer, got 0"),
        ({**BASE, "model": [768]}, r"field 'model' must be an object"),
    ],
)
def test_config_rejects_what_it_does_not_implement(raw, message):
    with pytest.raises(CheckpointError, match=r"x/config\.json: " + message):
        RADDConfig.from_dict(raw, source="x/config.json")


def test_small_release_config():
    spec = RADDConfig.from_dict(BASE).model_spec()
    assert (spec.mask_token_id, spec.eos_token_id, spec.vocab_size) == (50257, 50256, 50257)
    assert (spec.n_layers, spec.n_kv_heads, spec.head_dim, spec.max_sequence_length) == (12, 12, 64, 1024)


# -- generation through the engine -------------------------------------------------------------------
@pytest.fixture(scope="module")
def llm(loaded):
    return LLM(loaded)


def test_continuous_sampler_reuses_unchanged_canvases(llm):
    params = SamplingParams(
        max_tokens=32, steps=256, sampler="continuous", temperature=1.0, seed=3, ignore_eos=True
    )
    (out,) = llm.generate(["The sky is"], params)
    assert out.finish_reason == "length" and len(out.token_ids) == 32
    assert all(0 <= t < TOKENS for t in out.token_ids)
    # S = 256 steps over L = 32 masks: E-NFE = 256 (1 - (1 - 1/256)^32) ~ 30.1 forwards, not 256
    assert out.num_forward_passes <= 32 < out.num_steps
    again = llm.generate(["The sky is"], params)[0]
    assert again.token_ids == out.token_ids  # seeded


def test_exact_sampler_and_approximate_caches_generate(llm):
    ids = llm.tokenizer("Once upon a time", add_special_tokens=False)["input_ids"]

    def run(steps):
        return llm.generate(
            prompt_token_ids=[ids] * 3,
            sampling_params=[
                SamplingParams(
                    max_tokens=16,
                    steps=steps,
                    block_length=8,
                    temperature=0.0,
                    ignore_eos=True,
                    cache=c,
                    sampler="exact",  # not the family's default (continuous)
                )
                for c in ("none", "prefix", "dual")
            ],
        )

    outs = run(16)  # one token a step: the cached modes reuse their K/V inside each block
    assert [len(o.token_ids) for o in outs] == [16, 16, 16]
    assert [o.num_forward_passes for o in outs] == [16, 16, 16]  # the exact schedule reuses nothing
    # One step a block: each is a block-entry refresh (a full forward) in every mode, so all agree.
    none, prefix, dual = run(2)
    assert none.token_ids == prefix.token_ids == dual.token_ids


def test_the_family_default_is_radds_continuous_sampler(llm):
    assert llm.engine.default_params["sampler"] == "continuous"
    out = llm.generate(
        prompt_token_ids=[[5, 6, 7]], sampling_params=SamplingParams(max_tokens=16, steps=64, ignore_eos=True)
    )[0]
    assert len(out.token_ids) == 16 and out.num_forward_passes < 64  # steps that reveal nothing reuse
    threshold = llm.generate(prompt_token_ids=[[5, 6, 7]], sampling_params=SamplingParams(threshold=0.9))
    assert threshold[0].finish_reason in ("stop", "length")  # a parallel-decoding request still runs


def test_chat_is_refused(llm):
    with pytest.raises(ValueError, match="no chat template"):
        llm.chat([{"role": "user", "content": "hi"}])


def test_mask_id_in_prompt_is_refused(llm):
    with pytest.raises(ValueError, match=r"prompt token ids must be integers in \[0, 300\)"):
        llm.generate(prompt_token_ids=[[5, TOKENS]], sampling_params=SamplingParams(max_tokens=4))


def biased(radd_dir, channel: int) -> LLM:
    """The tiny model with head bias +100 on one output channel (that class always wins)."""
    lm = load_model(radd_dir, dtype="float32", device="cpu", tokenizer=tokenizer_dir(radd_dir))
    lm.model.output_layer.linear.bias.data[channel] += 100.0
    return LLM(lm)


def test_mask_channel_is_never_sampled(radd_dir):
    llm = biased(radd_dir, TOKENS)  # the released head's last channel: the mask
    params = SamplingParams(max_tokens=16, steps=16, sampler="continuous", temperature=1.0, seed=0)
    (out,) = llm.generate(prompt_token_ids=[[1, 2]], sampling_params=params)
    assert len(out.token_ids) == 16 and all(0 <= t < TOKENS for t in out.token_ids)


def test_eos_ends_the_answer(radd_dir):
    """EOS (<|endoftext|>, tokens - 1) everywhere: the answer is empty and stops. RADD samples the
    whole fixed-length canvas; EOS only cuts the text (and skips later blocks, if any)."""
    llm = biased(radd_dir, TOKENS - 1)
    params = SamplingParams(max_tokens=16, steps=16, sampler="continuous", temperature=0.0, seed=0)
    (out,) = llm.generate(prompt_token_ids=[[1, 2]], sampling_params=params)
    assert (out.token_ids, out.text, out.finish_reason) == ([], "", "stop")
