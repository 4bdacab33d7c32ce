"""When a reply is over: the stop rule the eval applies while a reply streams in.

A reply ends at the first complete `Final answer:` line after any reasoning
(the line and its newline), or once it loops: the same non-empty line three
times, or the same short stretch of text (up to 40 characters) five times in a
row at its end, 20 characters at least. Small models do both at the token limit otherwise: the default
run's untrained base filled 256 tokens on most items, and an under-trained
adapter wrote `0.00625 x 0.625 = 0.00625 x 0.625 = ...` until cut.

Cutting at the first final answer means a reply that states one and then
revises it is scored on the first; the report says so (RULE).
"""
from __future__ import annotations

import re

RULE = ("generation stops at the first complete 'Final answer:' line after any reasoning, or when a line "
        "repeats 3 times or a stretch of up to 40 characters 5 times in a row (20 characters at least)")
_FINAL_LINE = re.compile(r"final answer[^\n]*\d[^\n]*\n", re.I)
# checked after every streamed token, on the client threads beside llama-server's own: as
# the regex `(.{1,40}?)\1{4,}$` on the last 400 characters that took 600 us a call, as
# ends_in_loop 12 us (measured on a looping reply)
_TAIL, _UNIT, _TIMES, _MIN_LEN = 400, 40, 5, 20


def cut(text: str, open_think: bool = False) -> tuple[str, str | None]:
    """(text up to where the rule ends it, why) or (text, None) when it does not."""
    if "</think>" in text:
        start = text.index("</think>") + len("</think>")
    elif open_think or "<think>" in text:
        start = None  # still reasoning: only the loop rule applies
    else:
        start = 0
    if start is not None and (m := _FINAL_LINE.search(text, start)):
        return text[:m.end()], "final answer"
    lines = text.split("\n")
    seen: dict[str, int] = {}
    pos = 0
    for line in lines[:-1]:  # complete lines only
        pos += len(line) + 1
        key = line.strip()
        if key:
            seen[key] = seen.get(key, 0) + 1
            if seen[key] == 3:
                return text[:pos], "repeated line"
    if ends_in_loop(text[-_TAIL:]):
        return text, "repeated text"
    return text, None


def ends_in_loop(tail: str) -> bool:
    """Whether `tail` ends in some stretch of 1-40 characters repeated 5 times or
    more, the repeats 20 characters at least (so no real number, "1,000,000", counts).
    The same answer as the regex `(.{1,40}?)\1{4,}$` with its match 20 characters or
    longer (tests/test_eval_speed.py compares them): the regex's leftmost match is
    the longest run of whole repeats ending at the end, so it suffices that, for
    some stretch length, the run of its repeats there is 5 or more and 20 long. Like
    the regex's `$`, the end may also be just before a final newline."""
    if tail.endswith("\n") and _loop_at_end(tail[:-1]):
        return True
    return _loop_at_end(tail)


def _loop_at_end(tail: str) -> bool:
    for n in range(1, _UNIT + 1):
        unit = tail[-n:]
        if len(unit) < n or not tail.endswith(unit * _TIMES):
            continue
        times = _TIMES
        while tail.endswith(unit, 0, len(tail) - times * n):
            times += 1
        if times * n >= _MIN_LEN:
            return True
    return False
