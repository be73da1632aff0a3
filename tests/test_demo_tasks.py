"""The demo task suite: exact answers, seeded generation, a train/held-out split that never overlaps,
and a tokenizer under which letters and digits stay single tokens."""

import random
import re
import string

import pytest

from models.demo_tasks import (
    CORE_TASKS,
    TASKS,
    TOKENIZER_VOCAB_SIZE,
    Example,
    TaskEncoder,
    TrainStream,
    answer_for,
    build_demo_tokenizer,
    check_tokenizer,
    heldout_examples,
    is_correct,
    is_heldout,
    make_prompt,
)
from models.tokenizer import render_chat


@pytest.fixture(scope="module")
def tok():
    return build_demo_tokenizer()


def test_issue_examples():
    assert answer_for("reverse abcde") == "edcba"
    assert answer_for("sort 42 7 19") == "7 19 42"
    assert answer_for("add 12 45") == "57"
    assert answer_for("copy xyz") == "xyz"
    assert answer_for("sort 5 5 3") == "3 5 5"
    assert answer_for("add 99 99") == "198"
    with pytest.raises(ValueError):
        answer_for("divide 1 2")


def test_prompt_formats_and_ranges():
    rng = random.Random(0)
    for _ in range(500):
        p = make_prompt("reverse", rng)
        assert re.fullmatch(r"reverse [a-z]{3,12}", p)
        p = make_prompt("sort", rng)
        nums = p.split()[1:]
        assert p.startswith("sort ") and 3 <= len(nums) <= 8
        assert all(n == str(int(n)) and 0 <= int(n) <= 99 for n in nums)
        p = make_prompt("add", rng)
        m = re.fullmatch(r"add (\d+) (\d+)", p)
        assert m and all(g == str(int(g)) and 0 <= int(g) <= 99 for g in m.groups())
    assert {len(make_prompt("reverse", rng).split()[1]) for _ in range(2000)} == set(range(3, 13))
    assert {len(make_prompt("sort", rng).split()) - 1 for _ in range(2000)} == set(range(3, 9))


def test_answers_are_exact():
    rng = random.Random(1)
    for _ in range(300):
        letters = make_prompt("reverse", rng).split()[1]
        assert answer_for(f"reverse {letters}") == "".join(reversed(letters))
        nums = [rng.randint(0, 99) for _ in range(rng.randint(3, 8))]
        ans = answer_for("sort " + " ".join(map(str, nums)))
        assert [int(x) for x in ans.split(" ")] == sorted(nums) and "  " not in ans
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        assert answer_for(f"add {a} {b}") == str(a + b)


def test_stream_is_seeded():
    a = [e.prompt for e in TrainStream(3).batch(50)]
    assert a == [e.prompt for e in TrainStream(3).batch(50)]
    assert a != [e.prompt for e in TrainStream(4).batch(50)]
    assert {e.task for e in TrainStream(0).batch(400)} == set(TASKS)
    first = [e.prompt for e in heldout_examples("sort", 20)]
    assert first == [e.prompt for e in heldout_examples("sort", 20)]


def test_split_never_overlaps():
    train = TrainStream(0).batch(5000)
    assert not any(is_heldout(e.prompt) for e in train)
    held = {e.prompt for t in TASKS for e in heldout_examples(t, 200)}
    assert all(is_heldout(p) for p in held)
    assert not held & {e.prompt for e in train}
    # the split depends on the prompt text alone, and holds out about a tenth of the prompts
    rng = random.Random(2)
    prompts = [make_prompt(t, rng) for t in TASKS for _ in range(2000)]
    share = sum(map(is_heldout, prompts)) / len(prompts)
    assert 0.07 < share < 0.13
    assert [is_heldout(p) for p in prompts[:100]] == [is_heldout(p) for p in prompts[:100]]
    # every add prompt is in exactly one split: the held-out sums are sums the model never trained on
    adds = [f"add {a} {b}" for a in range(100) for b in range(100)]
    assert 500 < sum(map(is_heldout, adds)) < 1500


def test_heldout_examples_distinct_and_correct():
    for task in CORE_TASKS:
        exs = heldout_examples(task, 100)
        assert len({e.prompt for e in exs}) == 100
        assert all(e.task == task and e.answer == answer_for(e.prompt) for e in exs)


def test_is_correct():
    ex = Example("add", "add 12 45", "57")
    assert is_correct(ex, "57") and is_correct(ex, " 57\n")
    assert not is_correct(ex, "5 7") and not is_correct(ex, "570")


def test_tokenizer_keeps_letters_and_digits_apart(tok):
    check_tokenizer(tok)
    assert len(tok) == TOKENIZER_VOCAB_SIZE
    assert tok.convert_tokens_to_ids(
        ["<|startoftext|>", "<|endoftext|>", "<|mdm_mask|>", "<|start_header_id|>", "<|end_header_id|>",
         "<|eot_id|>"]) == [0, 1, 2, 3, 4, 5]
    ids = tok("reverse " + string.ascii_lowercase, add_special_tokens=False)["input_ids"]
    assert len(ids) == len("reverse") + 1 + 26
    answer = tok("zyxwvutsrqponmlkjihgfedcba", add_special_tokens=False)["input_ids"]
    assert answer == list(reversed(ids[-26:]))  # reversing the prompt's tokens spells the answer


def test_encoder_matches_render_chat(tok):
    enc = TaskEncoder(tok)
    exs = TrainStream(5).batch(200) + [Example("add", "add 12 45", "57")]
    enc.check(exs)
    ids = enc.prompt_ids(["sort 42 7 19"])[0]
    assert ids == render_chat(tok, [{"role": "user", "content": "sort 42 7 19"}])
    assert tok.decode(ids).endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_response_is_answer_eot_then_eos_padding(tok):
    enc = TaskEncoder(tok)
    (r,) = enc.response_ids(enc.answer_ids(["7 19 42"]), 24)
    n = len(tok("7 19 42", add_special_tokens=False)["input_ids"])
    assert len(r) == 24 and r[n] == enc.eot and r[n + 1:] == [enc.eos] * (24 - n - 1)
    assert tok.decode(r[:n]) == "7 19 42"
    longest = "98 " * 7 + "99"
    assert len(enc.response_ids(enc.answer_ids([longest]), 24)[0]) == 24
    with pytest.raises(ValueError):
        enc.response_ids(enc.answer_ids(["a" * 30]), 24)
