"""Dream (DreamModel): a tiny checkpoint in the release's layout, loaded through the normal path.

`plain_dream` restates Dream's published forward (model-formats.md section 6: Qwen2 layers with q/k/v
biases, bidirectional attention, half-split RoPE, untied head) for one sequence in plain torch, reading
the shards itself; `shifted` is Dream's generator taking position i's logits from the output at i - 1.
"""

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from engine import LLM, SamplingParams
from kernels.ops import TorchOps
from models import CheckpointError, load_model
from models.dream import DreamConfig
from models.forward_batch import PackedBatch
from models.tokenizer import render_chat
from models.writers.dream import write_tiny_checkpoint

PROMPTS = [[7, 8, 9, 10, 11], [40, 41], [100, 3, 200, 12, 13, 14, 15, 16, 17]]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_dream"))


@pytest.fixture(scope="module")
def release(ckpt):
    """config.json and every tensor (fp32) read straight from the shards the index names."""
    cfg = json.loads((ckpt / "config.json").read_text())
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())["weight_map"]
    sd = {}
    for key, shard in index.items():
        with safe_open(str(ckpt / shard), "pt") as f:
            sd[key] = f.get_tensor(key).float()
    return cfg, sd


@pytest.fixture(scope="module")
def llm(ckpt):
    return LLM(str(ckpt), device="cpu", dtype="float32", kernels="torch", kv_cache_memory=0.01)


def plain_dream(cfg: dict, sd: dict, ids: torch.Tensor, start: int = 0, cache=None):
    """[T] ids at positions start.. -> (unshifted logits [T, V], per-layer (k, v) [Hkv, T, D]).

    `cache`: per-layer (k, v) of a whole canvas; the keys and values outside this window come from it
    (Fast-dLLM's cached step), the window's own are fresh."""
    d, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, eps, t = d // nh, cfg["rms_norm_eps"], len(ids)
    pos = torch.arange(start, start + t, dtype=torch.float)
    freqs = pos[:, None] / cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float) / hd)
    cos, sin = torch.cat([freqs, freqs], -1).cos(), torch.cat([freqs, freqs], -1).sin()

    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    def rope(x):  # [H, T, D], rotate_half
        return x * cos + torch.cat([-x[..., hd // 2 :], x[..., : hd // 2]], -1) * sin

    x = sd["model.embed_tokens.weight"][ids]
    kv = []
    for n in range(cfg["num_hidden_layers"]):
        w = {k[len(f"model.layers.{n}.") :]: v for k, v in sd.items() if k.startswith(f"model.layers.{n}.")}
        h = rms(x, w["input_layernorm.weight"])
        q, k, v = (
            (h @ w[f"self_attn.{m}_proj.weight"].T + w[f"self_attn.{m}_proj.bias"])
            .view(t, -1, hd)
            .transpose(0, 1)
            for m in "qkv"
        )
        q, k = rope(q), rope(k)
        kv.append((k, v))
        if cache is not None:
            k_all, v_all = cache[n][0].clone(), cache[n][1].clone()
            k_all[:, start : start + t], v_all[:, start : start + t] = k, v
            k, v = k_all, v_all
        k, v = k.repeat_interleave(nh // nkv, 0), v.repeat_interleave(nh // nkv, 0)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=False)
        x = x + a.transpose(0, 1).reshape(t, d) @ w["self_attn.o_proj.weight"].T
        h = rms(x, w["post_attention_layernorm.weight"])
        act = F.silu(h @ w["mlp.gate_proj.weight"].T) * (h @ w["mlp.up_proj.weight"].T)
        x = x + act @ w["mlp.down_proj.weight"].T
    head = sd["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else sd["lm_head.weight"]
    return rms(x, sd["model.norm.weight"]) @ head.T, kv


def shifted(logits: torch.Tensor) -> torch.Tensor:
    """Dream's generator: the first position keeps its own logits, position i takes those of i - 1."""
    return torch.cat([logits[:1], logits[:-1]])


def restated_generate(cfg, sd, prompt, gen_length, block_length, steps, cache="none", cfg_scale=0.0):
    """Dream's maskgit_plus step at temperature 0 (argmax candidate, its probability as confidence,
    over shifted logits) committing, block by block, the top-k of the engine's fixed schedule (Dream
    counts int(n (1 - s/t)) per step instead, over one block). `cache` restates Fast-dLLM's: a full
    forward on entering a block fills the K/V; later steps recompute from the position before the
    block to its end (dual) or to the canvas end (prefix). CFG: a second row with the prompt masked."""
    mask, p = cfg["mask_token_id"], len(prompt)
    x = torch.tensor(list(prompt) + [mask] * gen_length)
    per_block = steps // (gen_length // block_length)
    for lo in range(p, p + gen_length, block_length):
        hi, kvs = lo + block_length, {}
        for i in range(per_block):
            rows = [x] + ([torch.where(torch.arange(len(x)) < p, mask, x)] if cfg_scale else [])
            out = []
            for r, row in enumerate(rows):
                if cache == "none" or i == 0:
                    logits, kvs[r] = plain_dream(cfg, sd, row)
                    out.append(shifted(logits)[lo:hi])
                else:
                    end = hi if cache == "dual" else len(x)
                    out.append(plain_dream(cfg, sd, row[lo - 1 : end], lo - 1, kvs[r])[0][:block_length])
            logits = out[0] if not cfg_scale else out[1] + (cfg_scale + 1) * (out[0] - out[1])
            probs = logits.softmax(-1)
            cand = probs.argmax(-1)
            conf = torch.where(x[lo:hi] == mask, probs.gather(1, cand[:, None])[:, 0], float("-inf"))
            k = block_length // per_block + (1 if i < block_length % per_block else 0)
            chosen = torch.topk(conf, k).indices
            x[lo + chosen] = cand[chosen]
    return x[p:].tolist()


def test_forward_matches_plain_dream(ckpt, release):
    cfg, sd = release
    lm = load_model(ckpt, dtype="float32", device="cpu")
    gen = torch.Generator().manual_seed(1)
    seqs = [torch.randint(0, cfg["vocab_size"], (n,), generator=gen) for n in (7, 13, 1)]
    logits = lm.model(PackedBatch.from_sequences(seqs, "cpu"), TorchOps())
    start = 0
    for s in seqs:
        expected = plain_dream(cfg, sd, s)[0]
        torch.testing.assert_close(logits[start : start + len(s)], expected, rtol=1e-4, atol=1e-4)
        start += len(s)


def test_loaded_model_facts(ckpt):
    lm = load_model(ckpt, dtype="float32", device="cpu")
    tok, spec = lm.tokenizer, lm.spec
    assert type(tok).__name__.startswith("Qwen2Tokenizer")  # the release's DreamTokenizer, stock class
    assert spec.shift_logits and not spec.time_conditioned
    assert spec.mask_token_id == tok.convert_tokens_to_ids("<|mask|>")
    assert spec.vocab_size == 320 > len(tok)  # the head is wider than the tokenizer, as in the release
    eos, im_end = tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    assert spec.stop_token_ids == (eos, im_end)
    assert (spec.n_layers, spec.n_kv_heads, spec.head_dim) == (2, 2, 16)
    ids = render_chat(tok, [{"role": "user", "content": "hi"}])
    assert tok.decode(ids) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 3


def test_engine_logits_are_the_shifted_forward(llm, release, monkeypatch):
    """The first step's logits of a masked answer are Dream's shifted ones, not the unshifted."""
    cfg, sd = release
    seen = []
    commits = llm.engine.runner.post_forward.commits
    monkeypatch.setattr(
        llm.engine.runner.post_forward,
        "commits",
        lambda reqs, logits: seen.append(logits.clone()) or commits(reqs, logits),
    )
    prompt = PROMPTS[2]
    llm.generate(
        prompt_token_ids=[prompt],
        sampling_params=SamplingParams(max_tokens=8, steps=8, ignore_eos=True, sampler="exact"),
    )
    x = torch.tensor(prompt + [cfg["mask_token_id"]] * 8)
    logits = plain_dream(cfg, sd, x)[0]
    torch.testing.assert_close(seen[0], shifted(logits)[len(prompt) :], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(seen[0], logits[len(prompt) :], atol=1e-2)


@pytest.mark.parametrize(
    "steps, gen_length, block_length, cache, cfg_scale",
    [
        (12, 12, 12, "none", 0.0),  # Dream's own shape: one block, one token per step
        (6, 16, 8, "none", 0.0),  # several tokens per step, two blocks
        (8, 8, 4, "none", 1.5),  # CFG
        (8, 16, 8, "prefix", 0.0),
        (8, 16, 8, "dual", 0.0),
        (8, 8, 4, "dual", 1.0),
    ],
)
def test_generation_matches_restated_sampler(llm, release, steps, gen_length, block_length, cache, cfg_scale):
    cfg, sd = release
    params = SamplingParams(
        max_tokens=gen_length,
        steps=steps,
        block_length=block_length,
        temperature=0.0,
        cache=cache,
        cfg_scale=cfg_scale,
        ignore_eos=True,
        sampler="exact",  # the restated sampler (the release's default alg "origin" is continuous)
    )
    outs = llm.generate(prompt_token_ids=PROMPTS, sampling_params=params)
    for prompt, out in zip(PROMPTS, outs, strict=True):
        expected = restated_generate(cfg, sd, prompt, gen_length, block_length, steps, cache, cfg_scale)
        assert out.token_ids == expected
        assert out.num_forward_passes == steps


def test_release_generation_config_gives_one_token_per_step(llm, release):
    """generation_config.json's `steps` (512) and `temperature` (0) apply by name; a shorter answer
    commits one token per step until its block is full (exact sampler)."""
    cfg, sd = release
    params = SamplingParams(max_tokens=10, ignore_eos=True, sampler="exact")
    out = llm.generate(prompt_token_ids=[PROMPTS[0]], sampling_params=params)
    assert out[0].token_ids == restated_generate(cfg, sd, PROMPTS[0], 10, 10, 10)
    assert out[0].num_forward_passes == 10


def test_release_alg_origin_is_the_continuous_sampler(llm, release):
    """Dream's default `alg` "origin" reveals masks in random order (each with probability 1 - s/t per
    step): the continuous sampler, whose steps that reveal nothing reuse the last forward."""
    assert llm.engine.default_params["sampler"] == "continuous"
    out = llm.generate(
        prompt_token_ids=[PROMPTS[0]], sampling_params=SamplingParams(max_tokens=10, ignore_eos=True)
    )[0]
    assert len(out.token_ids) == 10 and out.num_forward_passes <= 10  # 512 steps, at most 10 reveal
    config = llm.engine.model_config
    for alg, sampler, remasking in [
        ("maskgit_plus", "exact", None),
        ("entropy", "exact", "entropy"),
        ("topk_margin", "exact", "margin"),
        (None, None, None),
    ]:
        gen = {"steps": 512} if alg is None else {"alg": alg, "steps": 512}
        defaults = config.generation_defaults(gen)
        assert (defaults.get("sampler"), defaults.get("remasking")) == (sampler, remasking)
        assert SamplingParams().resolve(defaults).remasking == (remasking or "low_confidence")


@pytest.mark.interpreter
def test_triton_kernels_generate_as_restated(ckpt, release):
    """Every Triton kernel (interpreted on CPU): the dual cache's paged attention over the block and
    the position before it, the sampling head over the 320-row (padded) head."""
    cfg, sd = release
    llm = LLM(str(ckpt), device="cpu", dtype="float32", kernels="triton", kv_cache_memory=0.01)
    params = SamplingParams(
        max_tokens=8, steps=8, block_length=4, temperature=0.0, cache="dual", ignore_eos=True, sampler="exact"
    )
    outs = llm.generate(prompt_token_ids=PROMPTS[:2], sampling_params=params)
    for prompt, out in zip(PROMPTS[:2], outs, strict=True):
        assert out.token_ids == restated_generate(cfg, sd, prompt, 8, 4, 8, "dual")


# -- broken files ----------------------------------------------------------------------------------


@pytest.fixture
def broken(ckpt, tmp_path):
    dst = tmp_path / "dream"
    shutil.copytree(ckpt, dst)
    return dst


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_missing_key(broken):
    edit_json(
        broken / "model.safetensors.index.json",
        lambda d: d["weight_map"].pop("model.layers.1.self_attn.k_proj.bias"),
    )
    with pytest.raises(
        CheckpointError,
        match=r"model\.safetensors\.index\.json: missing key 'model\.layers\.1\.self_attn\.k_proj\.bias'$",
    ):
        load_model(broken)


def test_wrong_shape(broken):
    edit_json(broken / "config.json", lambda d: d.update(intermediate_size=128))
    with pytest.raises(
        CheckpointError,
        match=r"model-0000\d-of-00004\.safetensors: key 'model\.layers\.0\.mlp\.(gate|up|down)_proj"
        r"\.weight': shape \(\d+, \d+\), expected \(\d+, \d+\)$",
    ):
        load_model(broken)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"rope_scaling": {"type": "yarn", "factor": 4.0}}, r"rope_scaling=\{.*\} is not supported"),
        ({"use_sliding_window": True}, r"use_sliding_window=True is not supported"),
        ({"hidden_act": "gelu"}, r"hidden_act='gelu' is not supported"),
        ({"mask_token_id": None}, r"missing required field 'mask_token_id'"),
        ({"rope_theta": "1e6"}, r"field 'rope_theta' must be float"),
        ({"num_key_value_heads": 3}, r"num_key_value_heads 3 must divide num_attention_heads"),
        ({"head_dim": 32}, r"head_dim=32 is not supported"),
        ({"pad_token_id": 304}, r"mask_token_id must differ from pad_token_id"),
        ({"num_attention_heads": 0}, r"field 'num_attention_heads' must be at least 1; got 0"),
        ({"num_key_value_heads": -1}, r"field 'num_key_value_heads' must be at least 1; got -1"),
        ({"intermediate_size": -1}, r"field 'intermediate_size' must be at least 1; got -1"),
        ({"max_position_embeddings": -1}, r"field 'max_position_embeddings' must be at least 1"),
        ({"eos_token_id": -1}, r"field 'eos_token_id' must be at least 0; got -1"),
    ],
)
def test_bad_config_field(broken, change, message):
    edit_json(broken / "config.json", lambda d: d.update(change))
    with pytest.raises(CheckpointError, match=rf"dream/config\.json: {message}"):
        load_model(broken)


def test_config_reads_qwen2_defaults():
    raw = json.loads(json.dumps({"architectures": ["DreamModel"], "hidden_act": "silu"}))
    sizes = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4)
    raw |= sizes | dict(num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=10000, vocab_size=80)
    raw |= dict(max_position_embeddings=64, tie_word_embeddings=True, mask_token_id=70, eos_token_id=60)
    cfg = DreamConfig.from_dict(raw)  # no rope_scaling / use_sliding_window / pad: Qwen2's defaults
    assert cfg.pad_token_id == 60 and cfg.rope_theta == 10000.0 and cfg.head_dim == 16


def test_tied_embeddings_checkpoint_loads(broken, release):
    """tie_word_embeddings: the release then has no lm_head.weight, and the head is the embedding."""
    cfg, sd = release
    edit_json(broken / "config.json", lambda d: d.update(tie_word_embeddings=True))
    edit_json(broken / "model.safetensors.index.json", lambda d: d["weight_map"].pop("lm_head.weight"))
    lm = load_model(broken, dtype="float32", device="cpu")
    ids = torch.tensor(PROMPTS[2])
    tied = plain_dream({**cfg, "tie_word_embeddings": True}, sd, ids)[0]
    torch.testing.assert_close(lm.model(PackedBatch.from_sequences([ids], "cpu"), TorchOps()), tied)


def test_custom_tokenizer_code_is_refused_in_one_line(broken):
    """A tokenizer class only the release's own code defines is never run, and never prompts."""
    edit_json(broken / "tokenizer_config.json", lambda d: d.update(tokenizer_class="OtherTokenizer"))
    edit_json(
        broken / "tokenizer_config.json",
        lambda d: d.update(auto_map={"AutoTokenizer": ["tokenization_other.OtherTokenizer", None]}),
    )
    with pytest.raises(
        CheckpointError,
        match=r"dream/tokenizer_config\.json: cannot load tokenizer \(.*trust_remote_code=True.*\)$",
    ):
        load_model(broken)
