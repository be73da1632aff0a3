"""Text of a request's committed tokens: cut at stop strings, and safe to stream."""

from __future__ import annotations


def find_stop(text: str, stops: list[str]) -> int | None:
    """Index of the earliest occurrence of any stop string, or None."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def streamable(text: str, stops: list[str]) -> str:
    """The part of unfinished text that can no longer change.

    Holds back a trailing incomplete UTF-8 character (decoded as U+FFFD) and the longest suffix that
    could be the start of a stop string completed by a later block.
    """
    end = len(text)
    while end and text[end - 1] == "\ufffd":
        end -= 1
    hold = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, end), 0, -1):
            if text[end - n : end] == stop[:n]:
                hold = max(hold, n)
                break
    return text[: end - hold]
