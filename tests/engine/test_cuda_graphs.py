"""CUDA graphs of the cached block step (engine/cuda_graphs.py), checked on the CPU.

Without CUDA the graphs' padded static-buffer forward runs eagerly (`capture=False`): the same
buffers, padding rows and scratch page a replay reads, so a wrong padding row, a stale buffer or a
padding row that writes into a request's pages shows up here as different tokens. The capture itself
is checked by the gpu tier (tests/engine/test_gpu_engine.py).
"""

import logging

import pytest

from engine import LLM, SamplingParams
from engine.cuda_graphs import ladder, resolve_mode
from models.writers import dream

PROMPTS = [[7, 8, 9, 10, 11], [40, 41], [100, 3, 200, 12, 13, 14, 15, 16, 17], [5, 6, 7]]


def _llm(ckpt, **kw):
    return LLM(ckpt, device="cpu", dtype="float32", kernels="torch", kv_cache_memory=0.01, **kw)


def _plain_and_graphed(ckpt, max_rows: int, **kw):
    """Two engines over one checkpoint: one plain, one whose cached block steps go through the
    graphs' padded static-buffer forward (emulated: nothing is captured on the CPU)."""
    plain, graphed = _llm(ckpt, **kw), _llm(ckpt, **kw)
    graphed.engine.runner.use_cuda_graphs(max_rows=max_rows, capture=False)
    return plain, graphed


def _dual_params(block: int = 4):
    """Dual-cache requests sharing one block length (one query shape), with and without guidance,
    greedy, seeded sampling, threshold and factor: 4 requests, 6 rows (padded to 8)."""
    base = dict(block_length=block, cache="dual", ignore_eos=True)
    return [
        SamplingParams(max_tokens=12, steps=12, **base),
        SamplingParams(max_tokens=16, steps=8, cfg_scale=1.0, **base),
        SamplingParams(max_tokens=8, temperature=0.8, seed=3, threshold=0.5, **base),
        SamplingParams(max_tokens=12, factor=1.0, cfg_scale=0.5, remasking="random", seed=1, **base),
    ]


def _generate(llm, prompts, params):
    return [o.token_ids for o in llm.generate(prompt_token_ids=prompts, sampling_params=params)]


def test_graphed_steps_give_the_tokens_of_the_plain_forward(tiny_ckpt):
    plain, graphed = _plain_and_graphed(tiny_ckpt, 8, max_num_seqs=4)
    params = _dual_params()
    assert _generate(graphed, PROMPTS, params) == _generate(plain, PROMPTS, params)
    graphs = graphed.engine.runner.graphs
    assert graphs.num_replays > 0
    # Padded row counts were used (6 rows -> 8; as requests finish, 4, 2, 1), and pages widths vary.
    assert {shape[0] for shape in graphs._graphs} >= {8}
    assert graphed.engine.kv_cache.allocator.num_used == 0
    # Each alone (a single row: the ladder's 1 and 2) gets the same tokens again.
    for prompt, p in zip(PROMPTS, params, strict=True):
        assert _generate(graphed, [prompt], [p]) == _generate(plain, [prompt], [p])


def test_the_ladder_captured_at_start_serves_later_steps(tiny_ckpt):
    """capture_ladder (the engine's start, padding rows only) makes every padded size of one block
    length; requests of that block length then replay those graphs and make no new ones."""
    plain, graphed = _plain_and_graphed(tiny_ckpt, 8, max_num_seqs=4)
    graphs = graphed.engine.runner.graphs
    graphs.capture_ladder(4)
    ladder = {(rows, 4, graphs.min_width) for rows in (1, 2, 4, 8)}
    assert set(graphs._graphs) == ladder
    params = _dual_params(block=4)
    assert _generate(graphed, PROMPTS, params) == _generate(plain, PROMPTS, params)
    assert set(graphs._graphs) == ladder and graphs.num_replays > 0


def test_a_mixed_batch_keeps_its_tokens_with_graphs(tiny_ckpt):
    """Exact, prefix and dual requests of other block lengths beside the graphable ones: steps whose
    rows differ in query length run eagerly, the rest through the graphs; every token is the same."""
    prompts = PROMPTS + [[77] * 11, [9, 9, 8], [60] * 6]
    params = _dual_params() + [
        SamplingParams(max_tokens=10, steps=10, block_length=5, cache="none", ignore_eos=True),
        SamplingParams(max_tokens=12, steps=6, block_length=6, cache="prefix", cfg_scale=1.0),
        SamplingParams(max_tokens=8, block_length=8, cache="dual", temperature=0.7, seed=2, ignore_eos=True),
    ]
    plain, graphed = _plain_and_graphed(tiny_ckpt, 6, max_num_seqs=3)  # requests join as others finish
    assert _generate(graphed, prompts, params) == _generate(plain, prompts, params)
    assert graphed.engine.runner.graphs.num_replays > 0


def test_shifted_logits_family_through_graphs(tmp_path):
    """Dream queries one position before its block: the graphed query shape is block + 1."""
    ckpt = dream.write_tiny_checkpoint(tmp_path / "dream")
    # Seeded: the release's generation_config samples (temperature 0.2, top_p 0.95).
    params = [
        SamplingParams(max_tokens=8, steps=8, block_length=4, cache="dual", seed=1, ignore_eos=True),
        SamplingParams(max_tokens=8, steps=4, block_length=4, cache="dual", cfg_scale=1.0, seed=2),
    ]
    prompts = [[11, 12, 13], [20, 21, 22, 23, 24]]
    plain, graphed = _plain_and_graphed(ckpt, 4)
    assert _generate(graphed, prompts, params) == _generate(plain, prompts, params)
    graphs = graphed.engine.runner.graphs
    assert graphs.num_replays > 0 and {shape[1] for shape in graphs._graphs} == {5}


@pytest.mark.parametrize("family", ["llada_moe", "smdm", "radd"])
def test_other_families_through_graphs(tmp_path, family):
    """LLaDA-MoE (padding rows are routed to experts too), SMDM and RADD (time-independent networks
    here, continuous samplers by default): the graphs' forward gives each request its plain tokens."""
    import importlib

    writer = importlib.import_module(f"models.writers.{family}")
    ckpt = writer.write_tiny_checkpoint(tmp_path / family)
    tokenizer = writer.tokenizer_dir(ckpt) if hasattr(writer, "tokenizer_dir") else None
    params = [
        SamplingParams(max_tokens=8, steps=8, block_length=4, cache="dual", seed=1, ignore_eos=True),
        SamplingParams(max_tokens=12, steps=6, block_length=4, cache="dual", seed=2, sampler="exact"),
        SamplingParams(max_tokens=8, steps=16, block_length=4, cache="dual", seed=3, temperature=0.5),
    ]
    prompts = [[11, 12, 13], [20, 21, 22, 23, 24], [30, 31]]
    plain, graphed = _plain_and_graphed(ckpt, 4, tokenizer=tokenizer)
    assert _generate(graphed, prompts, params) == _generate(plain, prompts, params)
    assert graphed.engine.runner.graphs.num_replays > 0


def test_a_failed_capture_logs_once_and_runs_eagerly(tiny_ckpt, caplog):
    """A capture that raises (here: no CUDA to capture on) costs one warning per shape; the step runs
    eagerly and the tokens are those of the plain forward."""
    plain, graphed = _plain_and_graphed(tiny_ckpt, 4)
    graphed.engine.runner.graphs.capture = True  # capturing on the CPU fails
    params = [SamplingParams(max_tokens=12, steps=12, block_length=4, cache="dual", ignore_eos=True)] * 2
    with caplog.at_level(logging.WARNING, logger="dllm.engine"):
        assert _generate(graphed, PROMPTS[:2], params) == _generate(plain, PROMPTS[:2], params)
    warnings = [r.getMessage() for r in caplog.records if "runs eagerly" in r.getMessage()]
    graphs = graphed.engine.runner.graphs
    failed = [shape for shape, graph in graphs._graphs.items() if graph is None]
    assert failed and len(warnings) == len(failed)
    assert graphs.num_replays == 0 and graphs.num_captured == 0


def test_modes_and_their_errors():
    import torch

    cpu = torch.device("cpu")
    assert resolve_mode("auto", cpu, "torch") is False
    assert resolve_mode("off", cpu, "torch") is False
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_mode("on", cpu, "torch")
    with pytest.raises(ValueError, match="cuda_graphs must be one of auto, on, off"):
        resolve_mode("yes", cpu, "torch")
    assert ladder(1) == [1] and ladder(6) == [1, 2, 4, 8] and ladder(64) == [1, 2, 4, 8, 16, 32, 64]


def test_on_without_cuda_is_a_clear_error(tiny_ckpt):
    with pytest.raises(ValueError, match="cuda_graphs 'on' needs a CUDA device"):
        _llm(tiny_ckpt, cuda_graphs="on")
    with pytest.raises(ValueError, match="cuda_graphs must be one of"):
        _llm(tiny_ckpt, cuda_graphs="sometimes")
    assert _llm(tiny_ckpt).engine.runner.graphs is None  # auto on the CPU: off


def test_what_a_captured_graph_reads_stays_alive(tiny_ckpt):
    """A graph holds device addresses, not tensors: every input its forward read must outlive the
    capture. The capture is stubbed (no CUDA here): it runs the forward once, as a capture would."""
    import gc
    import weakref

    llm = _llm(tiny_ckpt)
    llm.engine.runner.use_cuda_graphs(max_rows=4, capture=False)
    graphs = llm.engine.runner.graphs
    graphs.capture = True
    graphs._warm_up = lambda run: None
    graphs._capture = lambda run: (type("Stub", (), {"replay": lambda self: None})(), run())
    refs = []
    make_batch = graphs._batch

    def recording_batch(*args):
        batch = make_batch(*args)
        kv = batch.kv
        tensors = (batch.input_ids, batch.positions, batch.cu_seqlens, kv.cu_seqlens_q, kv.page_table)
        refs.extend(weakref.ref(t) for t in (*tensors, kv.kv_lens, kv.write_slots))
        return batch

    graphs._batch = recording_batch
    graphs.capture_ladder(4)
    gc.collect()
    assert len(refs) == 7 * len(graphs.sizes) and all(r() is not None for r in refs)
