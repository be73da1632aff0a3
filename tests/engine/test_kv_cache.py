"""The approximate caches (cache="prefix" / "dual") against a restatement of Fast-dLLM v1.

`fastdllm_generate` below restates Fast-dLLM's `generate_with_prefix_cache` and
`generate_with_dual_cache` (one sequence, temperature 0) on top of `fd_forward`, a restatement of its
modified LLaDA model: the cache holds keys before rotary; a prefix step feeds x[s:] after the cached
K/V of positions < s; a dual step feeds only the block x[s:e], whose fresh K/V overwrite columns s..e
of the full-length cache, the queries taking positions s..e. On entering each block one full forward
refreshes the cache and drives the block's first commit. Confidence is the float64 softmax probability
of the argmax; the fixed schedule is LLaDA's; threshold mode keeps the best position and every other
one whose confidence reaches the threshold. Fast-dLLM has no guidance in its cached paths; with
`cfg_scale` the restatement runs the unconditional row (prompt masked) with a cache of its own, as the
engine does.
"""

import math
import random

import pytest
import torch
import torch.nn.functional as F

from engine import LLM, SamplingParams
from engine.kv_cache import PageAllocator
from models.registry import DEMO_MODEL_DIR


def fd_forward(sd, cfg, ids, past=None, replace=None):
    """ids [T] -> (logits [T, V] fp32, per-layer (k, v) [n_kv, K, hd] before rotary).
    past: per-layer K/V of positions 0..K0-1 (prefix cache); replace: (full-length K/V, s, e)."""
    p = "model.transformer."
    t, hd, nh, nkv = len(ids), cfg.head_dim, cfg.n_heads, cfg.n_kv_heads

    def rms(x, w):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps)).to(x.dtype) * w

    def rope(x, start):
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float) / hd))
        freqs = torch.outer(torch.arange(start, start + x.shape[1], dtype=torch.float), inv_freq)
        pos = torch.cat((freqs, freqs), dim=-1)
        x1, x2 = x.chunk(2, dim=-1)
        return (x.float() * pos.cos() + torch.cat((-x2, x1), dim=-1).float() * pos.sin()).to(x.dtype)

    x = F.embedding(ids, sd[p + "wte.weight"])
    present = []
    for i in range(cfg.n_layers):
        w = {k[len(f"{p}blocks.{i}.") :]: v for k, v in sd.items() if k.startswith(f"{p}blocks.{i}.")}
        h = rms(x, w["attn_norm.weight"])
        q = (h @ w["q_proj.weight"].T).view(t, nh, hd).transpose(0, 1)
        k = (h @ w["k_proj.weight"].T).view(t, nkv, hd).transpose(0, 1)
        v = (h @ w["v_proj.weight"].T).view(t, nkv, hd).transpose(0, 1)
        q_end = None
        if past is not None:
            k, v = torch.cat([past[i][0], k], dim=1), torch.cat([past[i][1], v], dim=1)
        elif replace is not None:
            full, s, e = replace
            k_all, v_all = full[i][0].clone(), full[i][1].clone()
            k_all[:, s:e], v_all[:, s:e] = k, v
            k, v, q_end = k_all, v_all, e
        present.append((k, v))
        key_len = k.shape[1]
        q_end = key_len if q_end is None else q_end
        q, k = rope(q, q_end - t), rope(k, 0)
        k = k.repeat_interleave(nh // nkv, dim=0)
        v = v.repeat_interleave(nh // nkv, dim=0)
        a = torch.softmax((q @ k.transpose(1, 2)) / math.sqrt(hd), dim=-1) @ v
        x = x + a.transpose(0, 1).reshape(t, -1) @ w["attn_out.weight"].T
        h = rms(x, w["ff_norm.weight"])
        x = x + (F.silu(h @ w["ff_proj.weight"].T) * (h @ w["up_proj.weight"].T)) @ w["ff_out.weight"].T
    return (rms(x, sd[p + "ln_f.weight"]) @ sd[p + "ff_out.weight"].T).float(), present


def num_transfer_tokens(n, steps):
    return [n // steps + (1 if i < n % steps else 0) for i in range(steps)]


def transfer_index(logits, mask_index, x, k, threshold):
    x0 = logits.argmax(-1)
    x0_p = torch.softmax(logits.double(), dim=-1).gather(1, x0[:, None]).squeeze(1)
    x0 = torch.where(mask_index, x0, x)
    confidence = torch.where(mask_index, x0_p, torch.tensor(-math.inf, dtype=torch.float64))
    if threshold is not None:
        k = int(mask_index.sum())
    select = torch.topk(confidence, k).indices
    transfer = torch.zeros_like(mask_index)
    transfer[select] = True
    if threshold is not None:
        for j in range(1, k):
            if confidence[select[j]] < threshold:
                transfer[select[j]] = False
    return x0, transfer


def fastdllm_generate(
    model, cfg, prompt, steps, gen_length, block_length, mode, threshold=None, cfg_scale=0.0
):
    sd = {"model." + k: v for k, v in model.state_dict().items()}
    mask_id = cfg.mask_token_id
    p = len(prompt)
    x = torch.tensor(list(prompt) + [mask_id] * gen_length)
    num_blocks = gen_length // block_length
    assert gen_length % block_length == 0 and steps % num_blocks == 0  # as Fast-dLLM asserts
    steps_per_block = steps // num_blocks

    def guided(fn):  # fn(sequence, row) -> (logits, cache); row 0 conditional, 1 unconditional
        cond, cache = fn(x, 0)
        if cfg_scale == 0:
            return cond, [cache]
        un_x = x.clone()
        un_x[:p] = mask_id
        un, un_cache = fn(un_x, 1)
        return un + (cfg_scale + 1) * (cond - un), [cache, un_cache]

    for b in range(num_blocks):
        s, e = p + b * block_length, p + (b + 1) * block_length
        schedule = num_transfer_tokens(int((x[s:e] == mask_id).sum()), steps_per_block)
        logits, caches = guided(lambda seq, r: fd_forward(sd, cfg, seq))
        mask_index = x == mask_id
        mask_index[e:] = False
        x0, transfer = transfer_index(logits, mask_index, x, schedule[0], threshold)
        x[transfer] = x0[transfer]
        if mode == "prefix":
            caches = [[(k[:, :s], v[:, :s]) for k, v in cache] for cache in caches]
        i = 1
        while (x[s:e] == mask_id).any():
            assert threshold is not None or i < steps_per_block
            if mode == "prefix":
                logits, _ = guided(lambda seq, r, s=s, c=caches: fd_forward(sd, cfg, seq[s:], past=c[r]))
                window = x[s:]
                mask_index = window == mask_id
                mask_index[block_length:] = False
            else:
                step = (
                    lambda seq, r, s=s, e=e, c=caches: fd_forward(  # noqa: E731
                        sd, cfg, seq[s:e], replace=(c[r], s, e)
                    )
                )
                logits, _ = guided(step)
                window = x[s:e]
                mask_index = window == mask_id
            x0, transfer = transfer_index(
                logits, mask_index, window, schedule[i] if i < len(schedule) else 0, threshold
            )
            window[transfer] = x0[transfer]
            i += 1
    return x[p:].tolist()


PROMPTS = [[7, 8, 9, 10, 11], [40, 41, 3], [100, 3, 200, 12, 13, 14, 15, 16, 17]]


@pytest.fixture(scope="module")
def llm(tiny_ckpt):
    return LLM(tiny_ckpt, device="cpu", dtype="float32", kernels="torch", kv_cache_memory=0.01)


def _check_against_restatement(llm, prompts, settings):
    model, cfg = llm.engine.loaded.model, llm.engine.model_config
    steps, gen_length, block_length, mode, threshold, cfg_scale = settings
    params = SamplingParams(
        max_tokens=gen_length,
        steps=steps,
        block_length=block_length,
        temperature=0.0,
        threshold=threshold,
        cfg_scale=cfg_scale,
        cache=mode,
        ignore_eos=True,
    )
    outs = llm.generate(prompt_token_ids=prompts, sampling_params=params)
    for prompt, out in zip(prompts, outs, strict=True):
        expected = fastdllm_generate(
            model, cfg, prompt, steps, gen_length, block_length, mode, threshold, cfg_scale
        )
        assert out.token_ids == expected, (prompt, settings)
    assert llm.engine.kv_cache.allocator.num_used == 0
    return outs


SETTINGS = [
    # steps, gen_length, block_length, mode, threshold, cfg_scale
    (16, 16, 16, "prefix", None, 0.0),  # one block, one token per step
    (16, 16, 16, "dual", None, 0.0),
    (6, 24, 8, "prefix", None, 0.0),  # three blocks, several tokens per step
    (12, 24, 8, "dual", None, 0.0),
    (24, 24, 8, "dual", None, 0.0),
    (24, 24, 24, "prefix", 0.3, 0.0),  # threshold, one block
    (24, 32, 8, "dual", 0.3, 0.0),  # threshold, several blocks
    (24, 32, 8, "prefix", 0.3, 0.0),
    (12, 12, 4, "dual", None, 1.5),  # guidance: the unconditional row has its own cache
    (12, 12, 4, "prefix", None, 1.5),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=[str(s) for s in SETTINGS])
def test_cached_modes_match_fastdllm(llm, settings):
    _check_against_restatement(llm, PROMPTS, settings)


def test_cached_schedule_takes_the_same_forwards_as_exact(llm):
    params = dict(max_tokens=16, steps=8, block_length=8, ignore_eos=True)
    for mode in ("none", "prefix", "dual"):
        out = llm.generate(
            prompt_token_ids=[PROMPTS[0]], sampling_params=SamplingParams(**params, cache=mode)
        )
        assert out[0].num_forward_passes == 8, mode


def test_forward_positions_shrink_with_the_cache(llm):
    seen = []
    llm.engine.step_listeners.append(lambda stats: seen.append(stats.num_tokens))
    try:
        totals = {}
        for mode in ("none", "prefix", "dual"):
            seen.clear()
            params = SamplingParams(max_tokens=32, steps=32, block_length=8, cache=mode, ignore_eos=True)
            llm.generate(prompt_token_ids=[PROMPTS[2]], sampling_params=params)
            totals[mode] = sum(seen)
    finally:
        llm.engine.step_listeners.pop()
    canvas = len(PROMPTS[2]) + 32
    assert totals["none"] == 32 * canvas
    # dual: one refresh per block (4 blocks) then 7 block-only steps of 8 positions each.
    assert totals["dual"] == 4 * canvas + 4 * 7 * 8
    # prefix: after the refresh, the block and everything right of it.
    assert totals["prefix"] == 4 * canvas + 7 * sum(canvas - (len(PROMPTS[2]) + 8 * b) for b in range(4))


def _assert_batch_matches_each_alone(llm, prompts, params):
    alone = [
        llm.generate(prompt_token_ids=[p], sampling_params=s)[0].token_ids
        for p, s in zip(prompts, params, strict=True)
    ]
    together = llm.generate(prompt_token_ids=prompts, sampling_params=params)
    assert [o.token_ids for o in together] == alone
    assert llm.engine.kv_cache.allocator.num_used == 0


def test_mixed_batch_matches_each_request_alone(llm):
    """Cached and uncached requests, every unmasking mode, lengths, block sizes, guidance and seeded
    sampling share forwards and one batched post-forward; each gets the tokens it gets alone."""
    prompts = PROMPTS + [[5, 6], [77] * 11, [9, 9, 8], [14, 13, 12, 11], [60] * 6, [33, 34]]
    params = [
        SamplingParams(max_tokens=16, steps=16, block_length=4, cache="dual", ignore_eos=True),
        SamplingParams(
            max_tokens=12, steps=6, block_length=6, cache="prefix", cfg_scale=1.0, ignore_eos=True
        ),
        SamplingParams(max_tokens=20, steps=20, block_length=5, cache="none", ignore_eos=True),
        SamplingParams(max_tokens=9, block_length=3, cache="dual", threshold=0.5, ignore_eos=True),
        SamplingParams(
            max_tokens=8, block_length=4, cache="prefix", temperature=0.9, seed=5, remasking="random"
        ),
        SamplingParams(max_tokens=16, steps=64, block_length=8, cache="dual", sampler="continuous", seed=3),
        SamplingParams(max_tokens=10, block_length=5, factor=1.0, cfg_scale=0.5, ignore_eos=True),
        SamplingParams(max_tokens=12, block_length=4, temperature=0.7, cfg_scale=1.0, seed=9, cache="dual"),
        SamplingParams(max_tokens=8, block_length=8, sampler="continuous", steps=24, temperature=1.0, seed=4),
    ]
    _assert_batch_matches_each_alone(llm, prompts, params)


def test_dream_remasking_in_a_mixed_batch_matches_each_request_alone(llm):
    """entropy / margin rows beside low_confidence and random ones, under every unmasking mode,
    guidance, sampling with filters, EOS bans and both caches: each request gets its tokens alone."""
    prompts = PROMPTS + [[5, 6], [77] * 11, [9, 9, 8], [14, 13, 12, 11], [60] * 6, [33, 34]]
    params = [
        SamplingParams(max_tokens=12, steps=6, block_length=6, remasking="entropy", ignore_eos=True),
        SamplingParams(
            max_tokens=12, steps=6, block_length=4, remasking="margin", cache="dual", cfg_scale=1.0
        ),
        SamplingParams(
            max_tokens=9, block_length=3, remasking="low_confidence", threshold=0.5, ignore_eos=True
        ),
        SamplingParams(
            max_tokens=8, block_length=4, remasking="random", seed=5, cache="dual", ignore_eos=True
        ),
        SamplingParams(
            max_tokens=9, block_length=3, remasking="margin", threshold=0.3, cache="dual", ignore_eos=True
        ),
        SamplingParams(
            max_tokens=10, block_length=5, remasking="entropy", factor=3.0, cfg_scale=0.5, logits_eos_inf=True
        ),
        SamplingParams(
            max_tokens=8,
            steps=4,
            block_length=8,
            remasking="entropy",
            temperature=0.8,
            top_p=0.9,
            seed=2,
            cache="prefix",
            confidence_eos_eot_inf=True,
            ignore_eos=True,
        ),
        SamplingParams(
            max_tokens=8, steps=24, remasking="margin", sampler="continuous", seed=4, ignore_eos=True
        ),
        SamplingParams(
            max_tokens=8, block_length=4, remasking="entropy", threshold=0.9, cache="dual", ignore_eos=True
        ),
    ]
    _assert_batch_matches_each_alone(llm, prompts, params)


def test_requests_joining_a_running_batch_get_the_tokens_they_get_alone(tiny_ckpt):
    """With room for three at a time, requests join as others finish: the runner's kept state (the
    settings table's slots, the forward's layout) follows every join and leave."""
    llm = LLM(tiny_ckpt, device="cpu", dtype="float32", kernels="torch", kv_cache_memory=0.01, max_num_seqs=3)
    prompts = [[5, 6], [77] * 11, [9, 9, 8], [14, 13, 12, 11], [60] * 6, [33, 34], [21, 22, 23]]
    params = [
        SamplingParams(max_tokens=4, steps=4, block_length=4, ignore_eos=True),
        SamplingParams(max_tokens=12, steps=12, block_length=4, cache="dual", cfg_scale=1.0, ignore_eos=True),
        SamplingParams(max_tokens=6, block_length=3, threshold=0.5, temperature=0.8, seed=2, ignore_eos=True),
        SamplingParams(max_tokens=8, steps=8, block_length=4, cache="prefix", remasking="random", seed=7),
        SamplingParams(
            max_tokens=10, steps=30, block_length=5, sampler="continuous", seed=1, ignore_eos=True
        ),
        SamplingParams(
            max_tokens=5, steps=5, block_length=5, top_k=3, temperature=1.0, seed=3, ignore_eos=True
        ),
        SamplingParams(max_tokens=8, block_length=4, factor=1.0, cache="dual", ignore_eos=True),
    ]
    _assert_batch_matches_each_alone(llm, prompts, params)


def test_demo_model_matches_fastdllm():
    llm = LLM(DEMO_MODEL_DIR, device="cpu", dtype="float32", kernels="torch", kv_cache_memory=0.01)
    tok = llm.engine.tokenizer
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
        )
        for text in ("reverse abcde", "sort 9 3 7", "add 12 45")
    ]
    ids = [tok.encode(p, add_special_tokens=False) for p in prompts]
    for settings in [
        (24, 24, 24, "dual", None, 0.0),
        (24, 24, 8, "prefix", None, 0.0),
        (24, 24, 8, "dual", 0.9, 0.0),
    ]:
        _check_against_restatement(llm, ids, settings)


def test_page_allocator_hands_out_and_takes_back():
    alloc = PageAllocator(5)
    a = alloc.allocate(2)
    b = alloc.allocate(3)
    assert sorted(a + b) == [0, 1, 2, 3, 4] and alloc.num_free == 0 and alloc.usage == 1.0
    assert not alloc.can_allocate(1)
    with pytest.raises(RuntimeError):
        alloc.allocate(1)
    alloc.free(a)
    assert alloc.num_free == 2 and alloc.can_allocate(2)
    alloc.free(b)
    assert alloc.num_used == 0 and alloc.usage == 0.0


def test_requests_wait_for_pages_and_never_fitting_ones_fail(tiny_ckpt):
    # 8 pages of 16 positions: a 5-token prompt + 32 tokens needs 3 pages (6 under CFG).
    pages = 8
    page_bytes = llm_page_bytes(tiny_ckpt)
    llm = LLM(
        tiny_ckpt, device="cpu", dtype="float32", kernels="torch", kv_cache_memory=pages * page_bytes / 2**30
    )
    assert llm.engine.kv_cache.allocator.num_pages == pages
    params = SamplingParams(max_tokens=32, steps=32, block_length=8, cache="dual", ignore_eos=True)
    engine = llm.engine
    for i in range(4):  # 4 x 3 pages: only two fit at once
        engine.add_request(str(i), PROMPTS[0], params)
    engine.step()
    assert len(engine.scheduler.running) == 2 and len(engine.scheduler.waiting) == 2
    assert engine.kv_cache.allocator.num_used == 6
    while engine.has_unfinished():
        engine.step()
    assert engine.kv_cache.allocator.num_used == 0
    with pytest.raises(ValueError, match="K/V cache pages"):
        engine.add_request("big", PROMPTS[0], SamplingParams(max_tokens=200, cache="dual"))
    exact = LLM(tiny_ckpt, device="cpu", dtype="float32", kernels="torch", kv_cache_memory=0)
    with pytest.raises(ValueError, match="needs a K/V cache pool"):
        exact.generate(
            prompt_token_ids=[PROMPTS[0]], sampling_params=SamplingParams(max_tokens=8, cache="prefix")
        )


def llm_page_bytes(ckpt) -> int:
    from engine.kv_cache import KVCache
    from models.config import LLaDAConfig, read_json

    cfg = LLaDAConfig.from_dict(read_json(ckpt / "config.json"))
    return KVCache.page_bytes(cfg.n_layers, cfg.n_kv_heads, cfg.head_dim, torch.float32)


def test_random_aborts_leave_the_pool_empty(llm):
    engine = llm.engine
    rng = random.Random(0)
    modes = ["prefix", "dual", "none"]
    live = []
    for i in range(40):
        params = SamplingParams(
            max_tokens=rng.choice([8, 16, 24]),
            block_length=8,
            cache=rng.choice(modes),
            cfg_scale=rng.choice([0.0, 1.0]),
            ignore_eos=True,
        )
        engine.add_request(f"r{i}", PROMPTS[i % 3], params)
        live.append(f"r{i}")
        for _ in range(rng.randint(0, 3)):
            engine.step()
        if rng.random() < 0.4:
            engine.abort(live.pop(rng.randrange(len(live))))
    while engine.has_unfinished():
        if rng.random() < 0.2 and engine.scheduler.running:
            engine.abort(engine.scheduler.running[0].request_id)
        engine.step()
    assert engine.kv_cache.allocator.num_used == 0


@pytest.mark.parametrize("memory", [float("inf"), float("nan"), -1, True, "1"])
def test_bad_pool_budgets_are_refused(memory):
    from engine.engine import EngineConfig

    with pytest.raises(ValueError, match="kv_cache_memory"):
        EngineConfig(kv_cache_memory=memory)


def test_a_pool_that_cannot_be_allocated_is_a_clear_error(tiny_ckpt):
    with pytest.raises(ValueError, match="cannot allocate a K/V cache pool"):
        LLM(tiny_ckpt, device="cpu", dtype="float32", kernels="torch", kv_cache_memory=1e9)
