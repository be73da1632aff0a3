"""The shipped demo checkpoint through the normal loader and the engine: held-out exact match."""

import pytest

from engine import LLM, SamplingParams
from engine.evaluate import evaluate, format_table, main_modes
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


def test_quick_heldout_eval_stays_above_90_percent(llm):
    rows = evaluate(llm, list(CORE_TASKS), ["exact"], num_prompts=16, seed=99)
    print(format_table(rows, list(CORE_TASKS)))
    for task in CORE_TASKS:
        assert rows[0][task] >= 0.9, (task, rows[0][task])
    assert main_modes()[0] == "exact"
