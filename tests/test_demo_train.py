"""The demo trainer (a tiny smoke run) and the shipped demo checkpoint (layout, loading, accuracy)."""

import json
import math

import pytest
import torch
from safetensors import safe_open

from kernels.attention import attention_ref
from kernels.ops import TorchOps
from models.demo_tasks import CORE_TASKS, TaskEncoder, TrainStream, build_demo_tokenizer
from models.demo_train import (
    VarlenTrainOps,
    add_arguments,
    evaluate,
    greedy_generate,
    lr_at,
    main,
    make_batch,
    mask_ratios,
)
from models.registry import DEMO_MODEL_DIR, load_model

TINY = ["--steps", "6", "--batch-size", "8", "--warmup", "2", "--d-model", "32", "--n-layers", "1",
        "--n-heads", "2", "--mlp-hidden", "48", "--eval-every", "0", "--eval-prompts", "2",
        "--log-every", "2", "--no-progress", "--no-compile"]


def _args(*extra):
    import argparse

    return add_arguments(argparse.ArgumentParser()).parse_args([*TINY, *extra])


def test_smoke_training_run_loads_through_the_loader(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main([*TINY, "--out", str(out), "--log-file", str(tmp_path / "loss.log")]) == 0
    printed = capsys.readouterr().out
    assert "loss" in printed and "held-out exact match" in printed
    assert (tmp_path / "loss.log").read_text().count("loss") >= 3
    lm = load_model(out, device="cpu")
    assert lm.config.d_model == 32 and lm.config.n_layers == 1
    assert lm.stop_token_ids == (1, 5)
    assert lm.generation_defaults["max_tokens"] == lm.generation_defaults["steps"] == 24
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["steps_done"] == 6 and summary["command"].startswith("python -m models.demo_train")


def test_training_is_reproducible_from_the_seed(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    main([*TINY, "--eval-prompts", "0", "--out", str(a)])
    main([*TINY, "--eval-prompts", "0", "--out", str(b)])
    for shard in sorted(a.glob("*.safetensors")):
        assert shard.read_bytes() == (b / shard.name).read_bytes()


def _split_prompt_response(tok, batch):
    """(token ids, response length) per sequence of a packed training batch: the prompt ends with the
    assistant header's <|end_header_id|> and "\\n\\n", the response follows."""
    ids, cu = batch.input_ids, batch.cu_seqlens.tolist()
    end_header = tok.convert_tokens_to_ids("<|end_header_id|>")
    for s, e in zip(cu[:-1], cu[1:], strict=True):
        seq = ids[s:e].tolist()
        prompt_len = len(seq) - seq[::-1].index(end_header) + 1
        yield seq, len(seq) - prompt_len


def test_noisy_batch_masks_only_the_response():
    tok = build_demo_tokenizer()
    enc = TaskEncoder(tok)
    args = _args("--long-response-prob", "0.5", "--short-response-prob", "0")
    gen = torch.Generator().manual_seed(0)
    batch, rows, targets, weights, ntok = make_batch(TrainStream(0), enc, args, gen, "cpu")
    ids, cu = batch.input_ids, batch.cu_seqlens.tolist()
    assert ntok == ids.numel() == cu[-1] and len(cu) == 9
    assert bool((ids[rows] == enc.mask).all()) and int((ids == enc.mask).sum()) == rows.numel()
    assert targets.ne(enc.mask).all() and (weights > 0).all()
    for seq, r_len in _split_prompt_response(tok, batch):
        assert enc.mask not in seq[:len(seq) - r_len]
        assert r_len in (24, 48)


def test_short_responses_pad_to_a_random_length_past_the_answer():
    tok = build_demo_tokenizer()
    enc = TaskEncoder(tok)
    args = _args("--batch-size", "64", "--long-response-prob", "0", "--short-response-prob", "1")
    gen = torch.Generator().manual_seed(0)
    batch, rows, targets, weights, ntok = make_batch(TrainStream(3), enc, args, gen, "cpu")
    ids = batch.input_ids
    lengths = set()
    for _, r_len in _split_prompt_response(tok, batch):
        lengths.add(r_len)
        assert r_len <= 24
    # the <|eot_id|> closing the answer is in every response (unmasked or a masked target)
    n_eot = int((ids == enc.eot).sum()) + int((targets == enc.eot).sum())
    assert n_eot == 64 + 64  # one in each prompt's template, one after each answer
    assert len(lengths) > 5 and min(lengths) < 10


def test_varlen_attention_matches_reference():
    torch.manual_seed(0)
    lengths = [5, 9, 3]
    cu = torch.tensor([0, *lengths]).cumsum(0).to(torch.int32)
    q, k, v = (torch.randn(sum(lengths), 4, 8) for _ in range(3))
    want = attention_ref(q, k, v, cu, cu)
    got = VarlenTrainOps().attention(q, k, v, cu, cu)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_mask_ratios_uniform_and_stratified():
    gen = torch.Generator().manual_seed(0)
    p = mask_ratios(4096, gen, eps=1e-3, stratified=False)
    assert bool(((p >= 1e-3) & (p <= 1)).all())
    t = (p - 1e-3) / (1 - 1e-3)
    assert abs(float(t.mean()) - 0.5) < 0.02 and abs(float((t < 0.25).float().mean()) - 0.25) < 0.03
    b = 64
    t = (mask_ratios(b, gen, eps=1e-3, stratified=True) - 1e-3) / (1 - 1e-3)
    slot = torch.arange(b)
    assert bool(((t >= slot / b - 1e-6) & (t < (slot + 1) / b + 1e-6)).all())  # one draw per slice
    assert len(set(t.tolist())) == b


@pytest.mark.slow
def test_compiled_forward_trains_like_eager(tmp_path):
    """--compile changes how the forward runs, not what it computes: two steps from the same seed give
    the same weights (fp32) with and without torch.compile."""
    common = [*TINY, "--eval-prompts", "0", "--no-bf16"]
    main([*common, "--steps", "0", "--out", str(tmp_path / "init")])
    main([*common, "--steps", "2", "--out", str(tmp_path / "eager")])
    main([*common, "--steps", "2", "--compile", "--out", str(tmp_path / "compiled")])
    init, eager, compiled = (load_model(tmp_path / name, device="cpu").model.state_dict()
                             for name in ("init", "eager", "compiled"))
    assert eager.keys() == compiled.keys()
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-4, atol=1e-5)
    # the two steps moved the weights well beyond that tolerance
    assert max(float((eager[k] - init[k]).abs().max()) for k in eager) > 1e-3


def test_lr_schedule():
    args = _args("--steps", "100", "--warmup", "10", "--lr", "1e-3")
    assert lr_at(0, args) == pytest.approx(1e-4) and lr_at(9, args) == pytest.approx(1e-3)
    assert lr_at(99, args) == pytest.approx(args.min_lr_ratio * 1e-3, rel=1e-2)
    assert all(lr_at(i, args) >= lr_at(i + 1, args) for i in range(10, 99))


# ----------------------------------------------------------------------------------------------
# The shipped checkpoint


@pytest.fixture(scope="module")
def demo():
    return load_model(DEMO_MODEL_DIR, device="cpu")


def test_shipped_checkpoint_is_in_llada_layout():
    files = {p.name for p in DEMO_MODEL_DIR.iterdir()}
    assert {"config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json"} <= files
    assert sum(p.stat().st_size for p in DEMO_MODEL_DIR.iterdir()) <= 25 * 2**20
    cfg = json.loads((DEMO_MODEL_DIR / "config.json").read_text())
    assert cfg["architectures"] == ["LLaDAModelLM"] and cfg["block_type"] == "llama"
    assert (cfg["mask_token_id"], cfg["eos_token_id"]) == (2, 1)
    index = json.loads((DEMO_MODEL_DIR / "model.safetensors.index.json").read_text())
    keys = set()
    for shard in set(index["weight_map"].values()):
        with safe_open(str(DEMO_MODEL_DIR / shard), "pt") as f:
            keys |= set(f.keys())
    assert keys == set(index["weight_map"])
    assert all(k.startswith("model.transformer.") for k in keys)
    assert {"model.transformer.wte.weight", "model.transformer.ff_out.weight",
            "model.transformer.ln_f.weight", "model.transformer.blocks.0.ff_proj.weight"} <= keys
    tc = json.loads((DEMO_MODEL_DIR / "tokenizer_config.json").read_text())
    assert "<|start_header_id|>assistant<|end_header_id|>" in tc["chat_template"]


def test_shipped_checkpoint_loads_with_its_defaults(demo):
    assert demo.config.vocab_size == len(demo.tokenizer)
    assert demo.stop_token_ids == (1, 5)
    g = demo.generation_defaults
    assert g["max_tokens"] == g["steps"] == g["block_length"] == 24  # one token per step
    assert g["temperature"] == 0.0 and g["remasking"] == "low_confidence"
    # the shipped tokenizer is the one the trainer builds
    assert demo.tokenizer.get_vocab() == build_demo_tokenizer().get_vocab()


def _generate(demo, prompts, ops):
    enc = TaskEncoder(demo.tokenizer)
    g = demo.generation_defaults
    outs = greedy_generate(demo.model, ops, enc.prompt_ids(prompts), gen_length=g["max_tokens"],
                           steps=g["steps"], block_length=g["block_length"], mask_id=enc.mask,
                           stop_ids=demo.stop_token_ids)
    return demo.tokenizer.batch_decode(outs, skip_special_tokens=True)


def test_shipped_checkpoint_answers_the_issue_examples(demo):
    prompts = ["reverse abcde", "sort 42 7 19", "add 12 45"]
    assert _generate(demo, prompts, TorchOps()) == ["edcba", "7 19 42", "57"]


def test_shipped_checkpoint_heldout_exact_match(demo):
    enc = TaskEncoder(demo.tokenizer)
    g = demo.generation_defaults
    acc = evaluate(demo.model, VarlenTrainOps(), demo.tokenizer, enc, n_per_task=10, tasks=CORE_TASKS,
                   gen_length=g["max_tokens"], steps=g["steps"], block_length=g["block_length"], seed=2024)
    assert sum(acc.values()) / len(acc) > 0.9, acc
    assert all(a >= 0.8 for a in acc.values()), acc
    assert not any(math.isnan(a) for a in acc.values())
