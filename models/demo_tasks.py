"""The demo checkpoint's task suite: chat prompts with exact answers, generated from a seed.

Tasks (the user message is exactly the prompt text; the assistant answers with the text alone):

    reverse <letters>   3 to 12 lowercase letters, answer: the letters reversed   reverse abcde -> edcba
    sort <numbers>      3 to 8 numbers 0..99, answer: ascending, single spaces      sort 42 7 19 -> 7 19 42
    add <a> <b>         a, b in 0..99, answer: the decimal sum                      add 12 45 -> 57
    copy <letters>      3 to 12 lowercase letters, answer: the same letters         copy abc -> abc

Train / held-out split: a prompt is held out when the SHA-256 of its user message falls in the
lowest `HELDOUT_PERCENT` percent (`is_heldout`). Training draws only prompts with is_heldout False,
evaluation only prompts with is_heldout True, so the two sets never overlap, whatever the seeds.

Tokenizer: a byte-level BPE (models.checkpoint_writer.build_tokenizer) whose only merges are "\\n\\n"
and " <digit>": every letter and every digit is its own token (so reversal works token by token and
arithmetic sees digits: " 42" -> " 4", "2"; "57" -> "5", "7"). `check_tokenizer` verifies this. (Whole
numbers as single tokens were tried: the model then memorised the training sums of `add` instead of
learning to add, about 10% on held-out sums.)

The response the model is trained on is, as in LLaDA's SFT, the answer tokens, <|eot_id|>, then
<|endoftext|> padding up to a fixed response length.
"""

from __future__ import annotations

import hashlib
import random
import string
from dataclasses import dataclass

TASKS = ("reverse", "sort", "add", "copy")
# Tasks whose held-out exact match the project guarantees (issue 6).
CORE_TASKS = ("reverse", "sort", "add")
HELDOUT_PERCENT = 10
# Sampling weights of the tasks in training: sort is the hardest, copy the easiest.
TRAIN_WEIGHTS = {"reverse": 0.2, "sort": 0.4, "add": 0.3, "copy": 0.1}

TOKENIZER_VOCAB_SIZE = 6 + 256 + 1 + 10  # specials, bytes, "\n\n", " d"


@dataclass(frozen=True)
class Example:
    task: str
    prompt: str  # the user message
    answer: str

    def messages(self) -> list[dict]:
        return [{"role": "user", "content": self.prompt}]


def answer_for(prompt: str) -> str:
    """The exact answer to a task prompt (raises ValueError on a malformed prompt)."""
    task, _, rest = prompt.partition(" ")
    args = rest.split(" ")
    if task == "reverse":
        return args[0][::-1]
    if task == "copy":
        return args[0]
    if task == "sort":
        return " ".join(str(n) for n in sorted(int(a) for a in args))
    if task == "add":
        a, b = (int(x) for x in args)
        return str(a + b)
    raise ValueError(f"unknown task in prompt {prompt!r}")


def _letters(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 12)))


def make_prompt(task: str, rng: random.Random) -> str:
    """One random user message for `task` (either split)."""
    if task in ("reverse", "copy"):
        return f"{task} {_letters(rng)}"
    if task == "sort":
        return "sort " + " ".join(str(rng.randint(0, 99)) for _ in range(rng.randint(3, 8)))
    if task == "add":
        return f"add {rng.randint(0, 99)} {rng.randint(0, 99)}"
    raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def is_heldout(prompt: str) -> bool:
    """True for the held-out split: decided by a hash of the prompt text alone."""
    h = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")
    return h % 100 < HELDOUT_PERCENT


def sample_example(task: str, rng: random.Random, heldout: bool) -> Example:
    """A random example of `task` from the requested split (rejection sampling on is_heldout)."""
    while True:
        prompt = make_prompt(task, rng)
        if is_heldout(prompt) == heldout:
            return Example(task, prompt, answer_for(prompt))


class TrainStream:
    """Endless seeded stream of training examples (never a held-out prompt)."""

    def __init__(self, seed: int, weights: dict[str, float] | None = None):
        self.rng = random.Random(seed)
        w = weights or TRAIN_WEIGHTS
        self.tasks = [t for t in TASKS if w.get(t, 0) > 0]
        self.weights = [w[t] for t in self.tasks]

    def next(self) -> Example:
        task = self.rng.choices(self.tasks, self.weights)[0]
        return sample_example(task, self.rng, heldout=False)

    def batch(self, n: int) -> list[Example]:
        return [self.next() for _ in range(n)]


def heldout_examples(task: str, n: int, seed: int = 1234) -> list[Example]:
    """`n` distinct held-out examples of `task`, the same for the same seed."""
    rng = random.Random(f"{seed}-{task}")
    seen: set[str] = set()
    out: list[Example] = []
    while len(out) < n:
        ex = sample_example(task, rng, heldout=True)
        if ex.prompt not in seen:
            seen.add(ex.prompt)
            out.append(ex)
    return out


def is_correct(example: Example, output: str) -> bool:
    """Exact match of the generated text (surrounding whitespace ignored) against the answer."""
    return output.strip() == example.answer


# ----------------------------------------------------------------------------------------------
# Tokenizer


def tokenizer_corpus() -> list[str]:
    """Corpus for build_tokenizer: with TOKENIZER_VOCAB_SIZE it yields exactly the merges "\\n\\n"
    and " d" (the most frequent pairs here), and never one between letters or between two digits.
    """
    corpus = ["\n\n"] * 100
    corpus += [f" {d}" for d in range(10)] * 50
    corpus += list(string.ascii_lowercase) + [" "] * 5
    return corpus


def build_demo_tokenizer():
    from models.checkpoint_writer import build_tokenizer

    tok = build_tokenizer(tokenizer_corpus(), TOKENIZER_VOCAB_SIZE, model_max_length=4096)
    check_tokenizer(tok)
    return tok


def check_tokenizer(tok) -> None:
    """Raise AssertionError unless the tokenizer has the properties the tasks rely on."""
    def ids(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    for ch in string.ascii_lowercase + string.digits:
        assert len(ids(ch)) == 1, f"{ch!r} is not one token"
    assert len(ids("abcdefghijklmnopqrstuvwxyz")) == 26, "letters merge"
    assert len(ids("reverse zyxwvuts")) == 7 + 1 + 8, "letters merge"
    for n in range(100):
        assert len(ids(f" {n}")) == len(str(n)), f"' {n}' is not spelt digit by digit"
        assert len(ids(str(n))) == len(str(n)), f"{n!r} is not spelt digit by digit"
    assert len(ids("198")) == 3
    assert len(ids("\n\n")) == 1


class TaskEncoder:
    """Token ids of prompts and training responses, without running the chat template per example.

    The chat template is rendered once around a placeholder; a prompt is that text with the
    placeholder replaced, encoded in one batched tokenizer call. `check` compares the result with
    models.tokenizer.render_chat.
    """

    PLACEHOLDER = "\x00"

    def __init__(self, tokenizer):
        self.tok = tokenizer
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": self.PLACEHOLDER}], tokenize=False, add_generation_prompt=True
        )
        self.before, self.after = text.split(self.PLACEHOLDER)
        self.eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        self.eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
        self.mask = tokenizer.convert_tokens_to_ids("<|mdm_mask|>")

    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, prompts: list[str]) -> list[list[int]]:
        texts = [self.before + p.strip() + self.after for p in prompts]
        return self.tok(texts, add_special_tokens=False)["input_ids"]

    def answer_ids(self, answers: list[str]) -> list[list[int]]:
        return self.tok(answers, add_special_tokens=False)["input_ids"]

    def response_ids(self, answer_ids: list[list[int]], length: int | list[int]) -> list[list[int]]:
        """answer + <|eot_id|> + <|endoftext|> padding to `length` tokens (per answer if a list),
        from the answers' `answer_ids`."""
        lengths = length if isinstance(length, list) else [length] * len(answer_ids)
        out = []
        for e, n in zip(answer_ids, lengths, strict=True):
            r = e + [self.eot]
            if len(r) > n:
                raise ValueError(f"answer of {len(e)} tokens does not fit a response of {n}")
            out.append(r + [self.eos] * (n - len(r)))
        return out

    def check(self, examples: list[Example]) -> None:
        from models.tokenizer import render_chat

        mine = self.prompt_ids([e.prompt for e in examples])
        for ex, ids in zip(examples, mine, strict=True):
            ref = render_chat(self.tok, ex.messages())
            assert ids == ref, f"prompt ids differ from render_chat for {ex.prompt!r}"
