"""Long context on the CPU: UltraLLaDA is LLaDA with rope_theta 2.8e8 and 131072 positions.

- The rotary tables are built once, for max_sequence_length, in fp32 exactly as LLaDA's reference
  computes them (not "improved" in float64: the network was trained on the fp32 angles).
- The torch attention reference works in query chunks: the logits equal the unchunked computation,
  and even SDPA's math backend (which holds every score of a call) stays far from [heads, L, L].
- The default limits admit a whole-context request, and a 16,384-token prompt generates with
  cache="dual" on one thread within 5 minutes and 8 GiB (measured in a subprocess: ru_maxrss is the
  peak of the whole process, so it must be a fresh one).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kernels.attention as attention
from engine import LLM, SamplingParams
from engine.engine import default_max_num_batched_tokens
from kernels.ops import TorchOps
from models import load_model
from models.llada import PackedBatch

ROOT = Path(__file__).resolve().parents[2]
MAX_LEN = 131072
GIB = 1 << 30


@pytest.fixture(scope="module")
def loaded(ultra_ckpt):
    return load_model(ultra_ckpt, dtype="float32", device="cpu")


def run_python(code: str, timeout: float) -> dict:
    """Run `code` in a fresh interpreter on one thread; it prints one JSON line last."""
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_rope_tables_once_in_fp32_as_llada_computes_them(loaded):
    cfg = loaded.config
    assert cfg.rope_theta == 2.8e8 and cfg.max_sequence_length == MAX_LEN
    cpu = torch.device("cpu")
    cos, sin = loaded.model.rope_tables(MAX_LEN, cpu)
    assert loaded.model.rope_tables(16, cpu)[0] is cos  # shorter batches reuse them
    # LLaDA's RotaryEmbedding: inv_freq and the position x frequency outer product in fp32.
    hd = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float) / hd))
    freqs = torch.einsum("i,j->ij", torch.arange(MAX_LEN, dtype=torch.float), inv_freq)
    assert cos.dtype == torch.float32 and cos.shape == (MAX_LEN, hd // 2)
    assert torch.equal(cos, freqs.cos()) and torch.equal(sin, freqs.sin())
    # Why "as the reference", not float64: at ~1e5 the fp32 angle is off by up to ulp(1e5) / 2 ~ 4e-3
    # rad, far more than near position 0; the network learned those angles, so they are kept.
    inv64 = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    cos64 = torch.outer(torch.arange(MAX_LEN, dtype=torch.float64), inv64).cos()
    err = (cos.double() - cos64).abs()
    assert err[:4096].max() < 1e-4 < err[-4096:].max() < 1e-2


@pytest.mark.parametrize("max_scores", [1, 97, 5000])
def test_chunked_attention_logits_equal_unchunked(loaded, monkeypatch, max_scores):
    """Budgets that leave 1 .. a few dozen queries per chunk: many chunks per row and per layer."""
    gen = torch.Generator().manual_seed(3)
    vocab = loaded.config.vocab_size
    for lengths in ((37, 5, 64, 1), (24, 24)):  # ragged rows (a call per row), equal rows (one call)
        seqs = [torch.randint(6, vocab, (n,), generator=gen) for n in lengths]
        batch = PackedBatch.from_sequences(seqs, "cpu")
        expected = loaded.model(batch, TorchOps())
        with monkeypatch.context() as m:
            m.setattr(attention, "MAX_CHUNK_SCORES", max_scores)
            chunked = loaded.model(batch, TorchOps())
        torch.testing.assert_close(chunked, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("max_scores", [1, 300])
def test_chunked_paged_attention_equals_unchunked(monkeypatch, max_scores):
    """The cached path (dual/prefix cache steps and refreshes): keys read through a page table."""
    gen = torch.Generator().manual_seed(4)
    page_size, kv_lens, q_lens = 16, [70, 33], [70, 5]  # a refresh (queries = keys), a block step
    k_cache = torch.randn(12 * page_size, 2, 16, generator=gen)
    v_cache = torch.randn(12 * page_size, 2, 16, generator=gen)
    q = torch.randn(sum(q_lens), 4, 16, generator=gen)
    cu_q = torch.tensor([0, q_lens[0], sum(q_lens)], dtype=torch.int32)
    table = torch.tensor([[3, 0, 7, 1, 9], [2, 11, 4, 0, 0]], dtype=torch.int32)
    args = (q, k_cache, v_cache, cu_q, table, torch.tensor(kv_lens, dtype=torch.int32), page_size)
    expected = attention.paged_attention_ref(*args)
    monkeypatch.setattr(attention, "MAX_CHUNK_SCORES", max_scores)
    torch.testing.assert_close(attention.paged_attention_ref(*args), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_chunked_reference_memory_under_sdpa_math_backend():
    """12288 queries x 12288 keys x 4 heads: unchunked, SDPA's math backend would hold 2.25 GiB of
    fp32 scores at once (and about twice that in all); the default chunks hold 256 MiB each (about
    600 MiB of peak growth measured)."""
    code = """
import json, resource, torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from kernels.attention import attention_ref
n = 12288
q, k, v = torch.randn(n, 4, 16), torch.randn(n, 2, 16), torch.randn(n, 2, 16)
cu = torch.tensor([0, n], dtype=torch.int32)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with sdpa_kernel(SDPBackend.MATH):
    attention_ref(q, k, v, cu, cu)
print(json.dumps({"growth": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024}))
"""
    growth = run_python(code, timeout=300)["growth"]
    assert growth < GIB, f"peak RSS grew {growth / 2**20:.0f} MiB"


def test_default_limits_admit_the_whole_context(ultra_ckpt):
    assert default_max_num_batched_tokens(4096) == 65536  # LLaDA-8B keeps its budget
    llm = LLM(ultra_ckpt, dtype="float32", device="cpu")
    core = llm.engine
    assert core.max_model_len == MAX_LEN
    cos, _ = core.runner.model.rope_tables(1, core.loaded.device)
    assert cos.shape[0] == MAX_LEN  # built at start for the whole context (8 MiB with sin here)
    assert core.max_num_batched_tokens == 2 * MAX_LEN  # one whole-context request with CFG
    for prompt_len in (16384, MAX_LEN - 32):
        for cfg_scale in (0.0, 1.0):
            params = SamplingParams(max_tokens=32, block_length=32, cfg_scale=cfg_scale, cache="dual")
            core.validate([7] * prompt_len, params)
    with pytest.raises(ValueError, match="context"):
        core.validate([7] * (MAX_LEN - 31), SamplingParams(max_tokens=32))


@pytest.mark.slow
def test_16k_prompt_dual_cache_one_thread(ultra_ckpt):
    code = f"""
import json, resource, time, torch
from engine import LLM, SamplingParams
torch.set_num_threads(1)
llm = LLM({str(ultra_ckpt)!r}, dtype="float32", device="cpu")  # default limits
vocab, mask = llm.engine.model_config.vocab_size, llm.engine.model_config.mask_token_id
ids = [6 + (i * 7919) % (vocab - 6) for i in range(16384)]
ids = [t if t != mask else t + 1 for t in ids]
params = SamplingParams(
    max_tokens=32, block_length=32, steps=32, temperature=0.0, ignore_eos=True, cache="dual"
)
start = time.perf_counter()
out = llm.generate(prompt_token_ids=[ids], sampling_params=params)[0]
seconds = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"seconds": seconds, "rss": rss, "tokens": len(out.token_ids),
                   "nfe": out.num_forward_passes}}))
"""
    res = run_python(code, timeout=600)
    print(
        f"16384-token prompt, 32 tokens, cache dual, 1 thread: {res['seconds']:.1f} s, "
        f"peak RSS {res['rss'] / 2**20:.0f} MiB, {res['nfe']} forwards"
    )
    assert res["tokens"] == 32 and res["nfe"] == 32
    assert res["rss"] < 8 * GIB
    assert res["seconds"] < 300
