"""The shipped demo checkpoint through the normal loader and the engine: held-out exact match."""

import pytest

from engine import LLM, SamplingParams
from engine.evaluate import MODES, evaluate, format_table, largest_drop, mode_params
from models import DEMO_MODEL_DIR, load_model
from models.demo_tasks import CORE_TASKS

pytestmark = pytest.mark.skipif(
    not (DEMO_MODEL_DIR / "config.json").exists(), reason="demo checkpoint not present"
)


@pytest.fixture(scope="module")
def llm():
    return LLM()  # no path: the shipped demo model


def test_demo_checkpoint_is_llada_layout():
    lm = load_model(DEMO_MODEL_DIR)
    assert lm.config.architecture == "LLaDAModelLM"
    assert (DEMO_MODEL_DIR / "model.safetensors.index.json").exists()
    assert lm.tokenizer.chat_template and lm.generation_defaults["max_tokens"] > 0
    size = sum(f.stat().st_size for f in DEMO_MODEL_DIR.iterdir())
    assert size <= 25 * 2**20


def test_defaults_alone_answer_correctly(llm):
    outs = llm.chat(
        [[{"role": "user", "content": m}] for m in ("reverse abcde", "sort 42 7 19", "add 12 45")],
        SamplingParams(temperature=0),
    )
    assert [o.text for o in outs] == ["edcba", "7 19 42", "57"]
    assert all(o.finish_reason == "stop" for o in outs)


@pytest.mark.parametrize("max_tokens", [64, 128, 256])
def test_answers_at_longer_max_tokens(llm, max_tokens):
    """The demo model answers with the canvas far longer than its answers (the model trained only on
    24-48-token responses filled a 128-token canvas with EOS: 0% on every task)."""
    rows = evaluate(llm, list(CORE_TASKS), ["exact"], num_prompts=8, seed=7, max_tokens=[max_tokens])
    print(format_table(rows, list(CORE_TASKS)))
    assert rows[0]["max_tokens"] == max_tokens
    for task in CORE_TASKS:
        assert rows[0][task] >= 0.85, (max_tokens, task, rows[0][task])


CACHED = ["prefix", "prefix-threshold-0.9", "prefix-block-8", "dual", "dual-threshold-0.9", "dual-block-8"]


def test_quick_heldout_eval_stays_above_90_percent(llm):
    modes = ["exact", "exact-block-8", *CACHED]
    rows = {r["mode"]: r for r in evaluate(llm, list(CORE_TASKS), modes, num_prompts=16, seed=99)}
    print(format_table(list(rows.values()), list(CORE_TASKS)))
    for mode in modes:
        for task in CORE_TASKS:
            assert rows[mode][task] >= 0.9, (mode, task, rows[mode][task])
    # Forward positions per answer token: the caches compute fewer; on one block of 24 tokens the
    # prefix and dual caches query the same positions, on blocks of 8 dual queries fewer.
    per_token = {mode: r["positions_per_token"] for mode, r in rows.items()}
    assert per_token["dual"] == per_token["prefix"] < per_token["exact"]
    assert per_token["dual-block-8"] < per_token["prefix-block-8"] < per_token["exact-block-8"]
    assert all(r["positions_per_token"] >= r["nfe_per_token"] for r in rows.values())


def test_every_mode_names_its_cache():
    engine_default = {"cache": "dual"}  # `dllm eval --cache dual` must not turn exact into dual
    caches = {mode: mode_params(mode, engine_default).resolve(engine_default).cache for mode in MODES}
    assert caches["exact"] == caches["threshold-0.9"] == "none"
    assert caches["prefix-threshold-0.9"] == "prefix" and caches["dual-block-8"] == "dual"
    assert set(caches.values()) == {"none", "prefix", "dual"}


def test_table_reports_the_largest_drop_below_exact():
    tasks = ["reverse", "sort"]
    exact = {"mode": "exact", "reverse": 1.0, "sort": 0.98}
    dual = {"mode": "dual", "reverse": 0.97, "sort": 0.99}
    rows = [
        {**r, "nfe_per_token": 1.0, "positions_per_token": 30.0, "tokens_per_s": 10.0} for r in (exact, dual)
    ]
    assert largest_drop(rows[1], rows[0], tasks) == pytest.approx(3.0)
    assert largest_drop(rows[0], rows[0], tasks) is None and largest_drop(rows[1], None, tasks) is None
    table = format_table(rows, tasks)
    assert "| - | exact | 100.0% | 98.0% | 1.00 | 30.0 | 10.0 | - |" in table
    assert "| - | dual | 97.0% | 99.0% | 1.00 | 30.0 | 10.0 | 3.0 |" in table


def test_table_compares_each_length_with_exact_at_that_length():
    tasks = ["reverse"]
    rows = [
        {"mode": m, "max_tokens": n, "reverse": acc, "nfe_per_token": 1.0, "positions_per_token": 1.0,
         "tokens_per_s": 1.0}
        for n, m, acc in [(24, "exact", 1.0), (24, "dual", 0.9), (64, "exact", 0.5), (64, "dual", 0.45)]
    ]
    table = format_table(rows, tasks)
    assert "| 24 | dual | 90.0% | 1.00 | 1.0 | 1.0 | 10.0 |" in table
    assert "| 64 | dual | 45.0% | 1.00 | 1.0 | 1.0 | 5.0 |" in table
