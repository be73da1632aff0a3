"""Logprob entries against the text a choice returns, with the demo tokenizer (byte-level BPE): no
model, no server."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.outputs import RequestOutput
from models.tokenizer import load_tokenizer
from server.logprobs import MIN_LOGPROB, LogprobCursor, TokenTexts, completion_logprobs

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo"
TEXT = "héllo wörld ✓ ok. sort 3 1 2"


@pytest.fixture(scope="module")
def texts():
    if not (DEMO / "tokenizer.json").exists():
        pytest.skip("the demo checkpoint is not shipped")
    return TokenTexts(load_tokenizer(DEMO))


def output(texts, ids, text=None, finished=True, logprob=-0.5) -> RequestOutput:
    return RequestOutput(
        request_id="r",
        prompt_token_ids=[5],
        token_ids=ids,
        text=texts.decode(ids) if text is None else text,
        finished=finished,
        finish_reason="stop" if finished else None,
        num_forward_passes=1,
        num_steps=1,
        logprobs=[(logprob, [(t, logprob)]) for t in ids],
    )


def test_offsets_match_the_decoded_prefixes(texts):
    ids = texts.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    entries = LogprobCursor(texts).take(output(texts, ids))
    assert [e.token_id for e in entries] == ids
    # Where a token ends inside a character, the prefix decodes to U+FFFD: the character starts there.
    assert [e.offset for e in entries] == [
        len(texts.decode(ids[:i]).rstrip("\ufffd")) for i in range(len(ids))
    ]


def test_bytes_of_a_split_character_are_its_raw_bytes(texts):
    ids = texts.tokenizer("✓", add_special_tokens=False)["input_ids"]
    assert b"".join(bytes(texts.bytes(t)) for t in ids) == "✓".encode()
    assert texts.bytes(1) == list(texts.text(1).encode()) and texts.text(1) == "<|endoftext|>"


def test_a_token_waits_until_its_whole_text_is_released(texts):
    ids = texts.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    starts = [e.offset for e in LogprobCursor(texts).take(output(texts, ids))]
    i = next(k for k in range(len(ids) - 1) if starts[k + 1] - starts[k] >= 2)  # a multi-character token
    cursor = LogprobCursor(texts)
    # The engine holds back text that may start a stop string: here, from inside token i.
    held = cursor.take(output(texts, ids, text=TEXT[: starts[i] + 1], finished=False))
    assert [e.token_id for e in held] == ids[:i]
    # A stop string there: the engine's token_ids end before token i, and nothing is left to send.
    assert cursor.take(output(texts, ids[:i], text=TEXT[: starts[i] + 1])) == []


def test_stream_pieces_add_up_to_the_whole(texts):
    ids = texts.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    cursor, taken = LogprobCursor(texts), []
    for end in range(1, len(ids)):  # the engine's unfinished text holds back an incomplete character
        held = texts.decode(ids[:end]).rstrip("\ufffd")
        taken += cursor.take(output(texts, ids[:end], text=held, finished=False))
    taken += cursor.take(output(texts, ids))
    assert [e.token_id for e in taken] == ids
    assert [e.offset for e in taken] == [e.offset for e in LogprobCursor(texts).take(output(texts, ids))]


def test_trailing_special_tokens_stay_in_a_whole_answer(texts):
    ids = [*texts.tokenizer("ok", add_special_tokens=False)["input_ids"], 1, 1]  # ignore_eos: EOS kept
    assert len(LogprobCursor(texts).take(output(texts, ids))) == len(ids)


def test_completion_shape_clamps_and_adds_the_chosen_token(texts):
    ids = texts.tokenizer("ok", add_special_tokens=False)["input_ids"]
    out = output(texts, ids, logprob=float("-inf"))
    out.logprobs[0] = (float("-inf"), [(ids[-1], -0.1)])
    shape = completion_logprobs(texts, LogprobCursor(texts).take(out))
    assert shape.token_logprobs[0] == MIN_LOGPROB
    assert shape.top_logprobs[0] == {texts.text(ids[-1]): -0.1, texts.text(ids[0]): MIN_LOGPROB}
    assert "".join(shape.tokens) == "ok" and shape.text_offset[0] == 0


def test_without_a_tokenizer_tokens_are_named_by_id():
    texts = TokenTexts(None)
    out = output(texts, [7, 8], text="")
    shape = completion_logprobs(texts, LogprobCursor(texts).take(out))
    assert shape.tokens == ["token_id:7", "token_id:8"] and shape.text_offset == [0, 0]
