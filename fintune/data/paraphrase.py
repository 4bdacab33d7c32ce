"""Surface rewrites of a training phrasing, applied before the numbers go in.

Each family is asked in ten training phrasings; the model reads an eleventh,
never trained on, worse than fresh draws of the ten (14-26 formula lines of
116 behind, measured). The rewrites keep the meaning and the worked solution,
and change what a reader should not rely on: the order of the given values,
whether the ask comes first or last, the verb of the ask, how units are named,
and chatter around the question.

Only training draws are rewritten (``data.paraphrase``, the fraction of them;
off by default). The held-out splits keep their phrasings as written. The word
lists use generic wording only: ``tests/test_paraphrase.py`` checks that no
rewrite brings a family's training text a word of its held-out phrasing that
its training phrasings lack. On the CPU profile, half the draws rewritten lifted
the format line in two seeds but not the unseen phrasings (docs/findings.md).
"""
from __future__ import annotations

import random
import re

PLACEHOLDER = re.compile(r"\{[^}]*\}")
# a sentence ends at . ? ! followed by a space and a capital, a $ or a placeholder
SENTENCE = re.compile(r"(?<=[.?!])\s+(?=[A-Z${])")
IMPERATIVE = ("Find", "Calculate", "Determine", "Work out")

# (pattern, alternatives): each match is replaced by one alternative
REWORDS: list[tuple[re.Pattern, list[str]]] = [
    (re.compile(r"\bin percent\b"), ["in percent", "as a percentage", "in %"]),
    (re.compile(r"\(percent\)"), ["(percent)", "(%)", "(in percent)"]),
    (re.compile(r"\bin dollars\b"), ["in dollars", "in USD", "in $"]),
    (re.compile(r"\(in dollars\)"), ["(in dollars)", "(USD)", "(in $)"]),
    (re.compile(r"\bstandard deviation\b"), ["standard deviation", "std. dev."]),
    (re.compile(r"^(Find|Compute|Calculate|Determine)\b"), list(IMPERATIVE)),
]
PREFIXES = ["Quick question: ", "Please help with this. ", "Finance question: ", "Here is a problem. "]
SUFFIXES = [" Show the steps.", " Please explain.", " Thanks!", " Show your work."]


def sentences(template: str) -> list[str]:
    return SENTENCE.split(template)


def ask_first(parts: list[str]) -> list[str]:
    """Move a closing question to the front: 'Given A, B. What is X?' -> 'What is X? Given A, B.'"""
    if len(parts) >= 2 and parts[-1].endswith("?"):
        return [parts[-1]] + parts[:-1]
    return parts


def _plain_word(word: str) -> bool:
    """An ordinary English word whose case can change; symbols like 'S' or 'Rf' never do."""
    return len(word) > 2 and word.replace("-", "").isalpha() and word[1:].islower()


def _set_case(item: str, upper: bool) -> str:
    word = item.split()[0]
    if not _plain_word(word):
        return item
    return (item[0].upper() if upper else item[0].lower()) + item[1:]


def shuffle_given(segment: str, rng: random.Random) -> str:
    """Shuffle a list of given values ('Stock price ${S}, strike ${K}, {T} years')
    when every item is short and names exactly one value; anything else is left as it is."""
    end = segment[-1] if segment[-1:] in ".?:" else ""
    body = segment[: len(segment) - len(end)]
    items = body.split(", ")
    if items and items[-1].startswith("and "):
        items[-1] = items[-1][4:]
    if len(items) < 3 or any(len(PLACEHOLDER.findall(i)) != 1 or len(i.split()) > 5 for i in items):
        return segment
    order = items[:]
    rng.shuffle(order)
    if order == items:
        return segment
    if items[0][0].isupper():  # the list opened its sentence: so does the new first item
        order = [_set_case(o, upper=(k == 0)) for k, o in enumerate(order)]
    return ", ".join(order) + end


def _shuffle_sentence(sentence: str, rng: random.Random) -> str:
    # 'Find X: a, b, c.' shuffles the list after the colon; 'a, b, c: X?' the one before it
    return ": ".join(shuffle_given(part, rng) for part in sentence.split(": "))


def reword(sentence: str, rng: random.Random) -> str:
    for pattern, options in REWORDS:
        sentence = pattern.sub(lambda m: rng.choice(options), sentence)
    if sentence.startswith("What is the ") and sentence.endswith("?") and rng.random() < 0.5:
        sentence = f"{rng.choice(IMPERATIVE)} the {sentence[len('What is the '):-1]}."
    return sentence


def rewrite(template: str, rng: random.Random) -> str:
    """One rewrite of `template` (placeholders intact); may return it unchanged."""
    parts = sentences(template)
    parts = [_shuffle_sentence(s, rng) if rng.random() < 0.7 else s for s in parts]
    parts = [reword(s, rng) for s in parts]
    if rng.random() < 0.4:
        parts = ask_first(parts)
    text = " ".join(parts)
    if rng.random() < 0.2:
        text = rng.choice(PREFIXES) + text
    if rng.random() < 0.2:
        text = text + rng.choice(SUFFIXES)
    return text
