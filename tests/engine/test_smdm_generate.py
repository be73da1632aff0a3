"""SMDM's sampler settings through the engine (LLM) on a tiny SMDM file: SMDM's "greddy" sampler with
its unsupervised CFG, restated here, against sampler="exact" + cfg_scale; the continuous ("origin")
sampler; the unconditional row replaces the prompt by the mask id 32000."""

import pytest
import torch

from engine import LLM, SamplingParams
from kernels.ops import TorchOps
from models.forward_batch import PackedBatch
from models.writers.smdm import tokenizer_dir, write_tiny_checkpoint

MASK = 32000


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    path = write_tiny_checkpoint(tmp_path_factory.mktemp("smdm"))
    return LLM(str(path), tokenizer=str(tokenizer_dir(path)), device="cpu", dtype="float32")


def smdm_greedy(model, prompt: list[int], gen_length: int, counts: list[int], cfg_scale: float):
    """SMDM's diff_sample, alg "greddy", temperature 0: canvas = prompt + masks; each step the
    guided logits un + (w + 1) (cond - un) of the masked positions (un: the prompt masked too), x0 =
    argmax, confidence = softmax(x0) in fp64; the counts[i] most confident masked positions reveal."""
    x = torch.tensor(prompt + [MASK] * gen_length)
    for count in counts:
        masked = (x == MASK).nonzero().flatten()
        un = x.clone()
        un[: len(prompt)] = MASK
        logits = model(PackedBatch.from_sequences([x, un], "cpu"), TorchOps())
        cond, uncond = logits[: len(x)][masked], logits[len(x) :][masked]
        guided = uncond + (cfg_scale + 1) * (cond - uncond) if cfg_scale > 0 else cond
        x0 = guided.argmax(-1)
        confidence = torch.softmax(guided.double(), -1).gather(-1, x0[:, None]).squeeze(-1)
        reveal = confidence.topk(count).indices
        x[masked[reveal]] = x0[reveal]
    return x[len(prompt) :].tolist()


def smdm_counts(num_masked: int, steps: int, eps: float = 1e-5) -> list[int]:
    """SMDM's "greddy" schedule: int(#masked * (1 - s/t)) on linspace(1, eps, steps + 1), all at the end."""
    times, counts = torch.linspace(1, eps, steps + 1), []
    for i in range(steps):
        n = int(num_masked * (1 - times[i + 1] / times[i])) if i < steps - 1 else num_masked
        counts.append(n)
        num_masked -= n
    return counts


def prompt_ids(llm, text="The sky is blue"):
    return llm.tokenizer(text, add_special_tokens=False)["input_ids"]


def generate_ids(llm, prompt, **params):
    (out,) = llm.generate(prompt_token_ids=[prompt], sampling_params=SamplingParams(**params))
    return out


@pytest.mark.parametrize("cfg_scale", [0.0, 0.6])
def test_one_step_is_smdm_greedy_exactly(llm, cfg_scale):
    """With one step both schedules reveal everything at once: the tokens must be SMDM's."""
    prompt = prompt_ids(llm)
    assert smdm_counts(12, 1) == [12]
    expected = smdm_greedy(llm.engine.loaded.model, prompt, 12, [12], cfg_scale)
    out = generate_ids(llm, prompt, max_tokens=12, steps=1, temperature=0.0, cfg_scale=cfg_scale)
    assert out.token_ids == expected[: len(out.token_ids)] and len(out.token_ids) > 0


def test_many_steps_follow_the_schedule_of_the_exact_sampler(llm):
    """sampler="exact" reveals floor(n/S) (+1 on the first n mod S steps); SMDM's int(n (1 - s/t))
    with t ending at 1e-5 gives one less on the first step and one more on the last."""
    prompt = prompt_ids(llm)
    assert smdm_counts(8, 4) == [1, 2, 2, 3]
    out = generate_ids(llm, prompt, max_tokens=8, steps=4, temperature=0.0, cfg_scale=0.6)
    expected = smdm_greedy(llm.engine.loaded.model, prompt, 8, [2, 2, 2, 2], 0.6)
    assert out.token_ids == expected[: len(out.token_ids)]


def test_unconditional_row_masks_the_prompt(llm, monkeypatch):
    model = llm.engine.loaded.model
    seen = []
    forward = model.forward

    def recording(batch, ops, logits_index=None):
        seen.append((batch.input_ids.tolist(), batch.cu_seqlens.tolist()))
        return forward(batch, ops, logits_index)

    monkeypatch.setattr(model, "forward", recording)
    prompt = prompt_ids(llm)
    generate_ids(llm, prompt, max_tokens=6, steps=2, temperature=0.0, cfg_scale=1.0)
    ids, bounds = seen[0]
    n = len(prompt) + 6
    assert bounds == [0, n, 2 * n]  # one conditional and one unconditional row
    assert ids[:n] == prompt + [MASK] * 6
    assert ids[n:] == [MASK] * n  # prompt replaced by the mask id


def test_continuous_sampler_is_smdm_origin(llm):
    """alg "origin": each masked position revealed with probability 1 - s/t, sampled at temperature 1;
    steps that reveal nothing reuse the previous forward (no time input)."""
    prompt = prompt_ids(llm)
    params = dict(max_tokens=8, steps=64, temperature=1.0, sampler="continuous", seed=5)
    out = generate_ids(llm, prompt, **params)
    assert out.num_steps <= 64 and out.num_forward_passes < out.num_steps  # ends once all revealed
    assert all(0 <= t < 32000 for t in out.token_ids) and out.finish_reason in ("stop", "length")
    assert generate_ids(llm, prompt, **params).token_ids == out.token_ids  # seeded


def test_text_prompt_and_eos(llm):
    (out,) = llm.generate(["The sky is"], SamplingParams(max_tokens=8, steps=8, temperature=0.0))
    assert out.finished and isinstance(out.text, str) and len(out.token_ids) <= 8
    assert llm.engine.loaded.stop_token_ids == (2,)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_approximate_caches(llm, cache):
    """One step per block: each block's step is the refresh that fills the cache, a full forward, so
    the tokens are exact mode's; with more steps the cached (approximate) path runs too."""
    prompt = prompt_ids(llm)
    one = dict(max_tokens=8, block_length=4, steps=2, temperature=0.0, cfg_scale=0.5)
    exact = generate_ids(llm, prompt, **one).token_ids
    assert generate_ids(llm, prompt, **one, cache=cache).token_ids == exact
    out = generate_ids(llm, prompt, max_tokens=8, block_length=4, steps=8, temperature=0.0, cache=cache)
    assert out.finished and out.num_forward_passes == 8
