"""Log-probabilities in OpenAI's two shapes, aligned with the text a choice returns.

The engine reports, per generated token in canvas order, its log-probability under the forward that
committed it and the best alternatives (RequestOutput.logprobs). Here each token gets its text (the
tokenizer's decode of that id alone), its bytes, and the character offset where it starts in the
choice's text. A finished output's token_ids are its answer (the engine cuts them before EOS/EoT and
where a stop string cuts the text); before that, a stream chunk carries the tokens whose text ends
inside the text it has released: a token whose text is held back (part of a character, a possible
stop-string prefix) waits for the chunk that releases it.

Offsets follow the text incrementally, as vLLM's detokenizer does: each token is decoded with a few
tokens before it (the window keeps SentencePiece's leading-space rule and multi-byte characters
right), so a choice of n tokens costs O(n) short decodes, not n decodes of growing prefixes.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from engine.outputs import RequestOutput
from server import protocol as p

MIN_LOGPROB = -9999.0  # a probability that underflowed to 0 (log -inf is not JSON), as OpenAI and vLLM
REPLACEMENT = "\ufffd"  # what decode makes of an incomplete UTF-8 sequence


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]]  # the best alternatives, most likely first
    offset: int  # character where the token's text starts in the choice's text


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: printable stand-in character -> byte."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


class TokenTexts:
    """Per token id: its text and its UTF-8 bytes (cached); `decode` as the engine makes texts."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._cache: dict[int, tuple[str, list[int] | None]] = {}
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        self._bytes_of = _byte_decoder() if type(decoder).__name__ == "ByteLevel" else None
        self._added = set(getattr(tokenizer, "added_tokens_decoder", {}) or {})

    def decode(self, ids: list[int]) -> str:
        if self.tokenizer is None:
            return ""
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def text(self, token_id: int) -> str:
        return self._entry(token_id)[0]

    def bytes(self, token_id: int) -> list[int] | None:
        return self._entry(token_id)[1]

    def _entry(self, token_id: int) -> tuple[str, list[int] | None]:
        entry = self._cache.get(token_id)
        if entry is None:
            entry = self._cache[token_id] = self._describe(token_id)
        return entry

    def _describe(self, token_id: int) -> tuple[str, list[int] | None]:
        if self.tokenizer is None:
            return f"token_id:{token_id}", None  # vLLM's spelling of a token without a tokenizer
        text = self.tokenizer.decode([token_id])
        if self._bytes_of is not None and token_id not in self._added:
            # A byte-level token holds raw bytes: a piece of a character decodes to U+FFFD alone.
            piece = self.tokenizer.convert_ids_to_tokens(token_id)
            if piece is not None and all(c in self._bytes_of for c in piece):
                return text, [self._bytes_of[c] for c in piece]
        return text, list(text.encode("utf-8"))


class LogprobCursor:
    """One choice: the entries of the tokens each new output adds to its text. Outputs of a request
    only grow (finished blocks are final), so the offsets computed so far stay valid."""

    def __init__(self, texts: TokenTexts):
        self.texts = texts
        self.offsets: list[int] = []  # start character of each token seen so far
        self._ends: list[int] = []  # end character of each token up to _read (complete characters)
        self._length = 0  # characters the tokens so far decode to, complete characters only
        self._prefix = self._read = 0  # ids[_prefix:_read]: context decoded with the next token
        self._sent = 0  # entries handed out

    def take(self, out: RequestOutput) -> list[TokenLogprob]:
        ids = out.token_ids
        self._follow(ids)
        if out.finished or self.texts.tokenizer is None:
            end = len(ids)
        else:
            end = bisect.bisect_right(self._ends, len(out.text))
        entries = []
        for i in range(self._sent, max(self._sent, end)):
            logprob, top = out.logprobs[i]
            logprob = max(logprob, MIN_LOGPROB)
            # The engine takes the chosen token's value from its probability (fp32) and the
            # alternatives' from a log_softmax (fp64): one value per token in a response.
            top = [(t, logprob if t == ids[i] else max(lp, MIN_LOGPROB)) for t, lp in top]
            entries.append(TokenLogprob(ids[i], logprob, top, self.offsets[i]))
        self._sent = max(self._sent, end)
        return entries

    def _follow(self, ids: list[int]) -> None:
        if self.texts.tokenizer is None:
            self.offsets += [0] * (len(ids) - len(self.offsets))
            return
        context = self.texts.decode(ids[self._prefix : self._read])
        for i in range(len(self.offsets), len(ids)):
            self.offsets.append(self._length)
            text = self.texts.decode(ids[self._prefix : i + 1])
            if len(text) > len(context) and not text.endswith(REPLACEMENT):
                self._length += len(text) - len(context)
                # Tokens that made no complete character of their own (a piece of one, a special
                # token) end where the character they lead to ends.
                self._ends += [self._length] * (i + 1 - self._read)
                self._prefix, self._read = self._read, i + 1
                context = self.texts.decode(ids[self._prefix : self._read])


def chat_logprobs(texts: TokenTexts, entries: list[TokenLogprob]) -> p.ChatLogprobs:
    """`choices[].logprobs` of chat: per token its text, logprob, bytes and best alternatives."""

    def one(token_id: int, logprob: float) -> dict:
        return {"token": texts.text(token_id), "logprob": logprob, "bytes": texts.bytes(token_id)}

    return p.ChatLogprobs(
        content=[
            p.ChatTokenLogprob(
                **one(e.token_id, e.logprob), top_logprobs=[p.ChatTopLogprob(**one(*alt)) for alt in e.top]
            )
            for e in entries
        ]
    )


def completion_logprobs(texts: TokenTexts, entries: list[TokenLogprob]) -> p.CompletionLogprobs:
    """`choices[].logprobs` of completions: parallel lists; each top_logprobs dict holds the best
    alternatives and the chosen token (OpenAI: up to logprobs + 1 entries)."""
    tops = []
    for e in entries:
        top: dict[str, float] = {}
        for token_id, logprob in [*e.top, (e.token_id, e.logprob)]:
            top.setdefault(texts.text(token_id), logprob)  # two ids may share a text: the likelier
        tops.append(top)
    return p.CompletionLogprobs(
        tokens=[texts.text(e.token_id) for e in entries],
        token_logprobs=[e.logprob for e in entries],
        top_logprobs=tops,
        text_offset=[e.offset for e in entries],
    )
