"""Pull the model's answer out of its reply, and score it against the gold.

An answer counts only when the model stated it: a `Final answer:` line, a
`\\boxed{}`, or a JSON {"answer": ...}; of several, the last one in the reply
(after any <think> block) is the model's answer. The last number of a reply
with none of these is only a fallback, scored in a column of its own
(`correct_lenient`), never in accuracy.

Scoring rules (``score``):
- right when within 1% of |gold|; where |gold| < 0.01 also when within an
  absolute tolerance small against the question's scale: 1e-4, or half a unit
  of the precision the question names ("two decimal places", "nearest cent",
  "in basis points"). A gold of 0 is thus matched only by a number that
  rounds to 0 at that precision.
- percent for fraction (x100 or /100) only where the reply marks its number as
  a percent (`%`, `\\%`, "percent") or the question asks for one ("percent",
  "percentage", a rate given in %); basis points (x10,000) likewise. Such a
  match is counted in ``scaled``. A bare number that is right only after
  rescaling is wrong.
- strict: within 0.2% of |gold| (same absolute rule), no rescaling.
Comparisons are made in the units of the reply.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

_NUM = r"\(?-?[$€£¥]?\s*-?\(?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?\)?\s*%?|\(?-?[$€£¥]?\s*-?\.\d+(?:[eE][-+]?\d+)?\)?\s*%?"
_ANY = re.compile(_NUM)
_FINAL = re.compile(r"final answer\s*(?:is)?\s*\**\s*[:=]?\s*\**[ \t]*([^\n]*)", re.I)
_JSON = re.compile(r"\{[^{}]*\"answer\"\s*:[^{}]*\}")
_BP = re.compile(r"\bbps?\b|basis points?", re.I)
_PERCENT_WORD = re.compile(r"\bper\s?cent(?:age)?s?\b", re.I)
REL, STRICT_REL, ABS_TOL, SMALL_GOLD = 0.01, 0.002, 1e-4, 0.01
EXPLICIT = ("final_answer", "boxed", "json")


@dataclass
class Extraction:
    value: float | None
    method: str               # final_answer | boxed | json | last_number | none
    is_percent: bool = False  # the reply wrote its number as a percent
    is_bp: bool = False       # ... or in basis points
    raw: str = ""             # the answer text the number came from

    @property
    def explicit(self) -> bool:
        return self.method in EXPLICIT


def strip_reasoning(text: str, open_think: bool = False) -> str:
    """The reply after its reasoning. `open_think`: the prompt already opened a
    <think> block (DeepSeek-R1's template), so a reply without `</think>` was
    cut while still reasoning and has no answer part."""
    if "</think>" in text:
        return text.split("</think>")[-1]
    if "<think>" in text or open_think:
        return re.sub(r"<think>.*", "", text, flags=re.S) if "<think>" in text else ""
    return text


def boxed_spans(text: str) -> list[tuple[int, str]]:
    """(position, content) of each outermost \\boxed{...}, braces balanced."""
    out, i = [], 0
    while (i := text.find("\\boxed{", i)) != -1:
        depth, j = 1, i + len("\\boxed{")
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        if depth:
            break  # unclosed: cut off mid-answer
        out.append((i, text[i + len("\\boxed{"):j - 1]))
        i = j
    return out


def _candidates(body: str) -> list[tuple[int, str, str]]:
    """(position, method, raw answer text) of every explicit answer in the body."""
    found = [(m.start(), "final_answer", m.group(1)) for m in _FINAL.finditer(body)]
    found += [(pos, "boxed", content) for pos, content in boxed_spans(body)]
    for m in _JSON.finditer(body):
        try:
            ans = json.loads(m.group(0)).get("answer")
        except (json.JSONDecodeError, RecursionError):
            continue
        if ans is not None:
            found.append((m.start(), "json", str(ans)))
    return sorted(found)


def parse_number(raw: str) -> tuple[float | None, bool]:
    """A number as written ("$1,234.5", "(12)", "5%", "1.2e3") -> (value, written as percent)."""
    s = raw.strip().rstrip(".")
    pct = s.endswith("%")
    neg = s.startswith("(") and ")" in s
    s = re.sub(r"[()%$€£¥\s]", "", s).replace(",", "")
    try:
        v = float(s)
    except ValueError:
        return None, pct
    if neg and v > 0:
        v = -v
    return (v if math.isfinite(v) else None), pct


def _latex_value(raw: str) -> float | None:
    """A LaTeX answer (\\frac{}{}, \\%, \\text{} units, {,} separators, nested
    \\boxed) read by math-verify, as the number written (a percent stays 5, not 0.05)."""
    from math_verify import LatexExtractionConfig, parse

    if len(raw) > 200:
        return None
    try:
        # parsing_timeout=None: its timeout uses SIGALRM, which only the main thread may set
        got = parse(f"\\boxed{{{raw}}}", extraction_config=[LatexExtractionConfig()], parsing_timeout=None)
        value = float(got[0]) if got else None
    except Exception:  # sympy raises many types on what it cannot read as one number
        return None
    if value is None or not math.isfinite(value):
        return None
    return value * 100 if "%" in raw else value


def read_answer(raw: str) -> tuple[float | None, bool, bool]:
    """(value as written, is percent, is basis points) of an answer's text."""
    text = raw.replace("**", "").strip().strip("$").strip()
    # "FCF = 40,000 - 10,000 = 30,000": the answer is what the working comes to
    tail = re.split(r"=|≈", text)[-1]
    if tail != text and _ANY.search(tail):
        text = tail.strip().strip("$").strip()
    is_pct = "%" in text or bool(_PERCENT_WORD.search(text))
    is_bp = bool(_BP.search(text))
    value = _latex_value(text) if "\\" in text or "{" in text else None
    if value is None:
        m = _ANY.search(re.sub(r"\\[a-zA-Z]+|[{}]", " ", text))
        if m:
            value, pct = parse_number(m.group(0))
            is_pct = is_pct or pct
    return value, is_pct, is_bp


def extract(text: str, open_think: bool = False) -> Extraction:
    body = strip_reasoning(text, open_think)
    for _, method, raw in reversed(_candidates(body)):
        value, pct, bp = read_answer(raw)
        if value is not None:
            return Extraction(value, method, pct, bp, raw.strip())
    for raw in reversed(_ANY.findall(body) or _ANY.findall(text)):
        value, pct = parse_number(raw)
        if value is not None:
            return Extraction(value, "last_number", pct, False, raw.strip())
    return Extraction(None, "none")


@dataclass(frozen=True)
class Expect:
    """What the question asks of the answer."""
    abs_tol: float = ABS_TOL  # for |gold| < 0.01: half a unit of the named precision
    percent: bool = False     # asks for a percent, or for a rate given in %
    basis_points: bool = False


_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
_DECIMALS = re.compile(r"\b(\d|one|two|three|four|five|six)\s+decimal(?:\s+places?|s)?\b", re.I)
_NEAREST = {"tenth": 0.1, "hundredth": 0.01, "thousandth": 0.001, "cent": 0.01, "whole number": 1.0,
            "integer": 1.0, "dollar": 1.0, "percent": 1.0, "basis point": 1.0}
_NEAREST_RE = re.compile(r"nearest\s+(" + "|".join(_NEAREST) + r")", re.I)


def expectation(question: str) -> Expect:
    """Precision and unit the question (with its context, when shown) asks for."""
    unit = None
    if m := _DECIMALS.search(question):
        unit = 10.0 ** -int(_WORDS.get(m.group(1).lower(), m.group(1)))
    elif m := _NEAREST_RE.search(question):
        unit = _NEAREST[m.group(1).lower()]
    bp = bool(_BP.search(question))
    if unit is None and bp:
        unit = 1.0  # whole basis points
    percent = bool(_PERCENT_WORD.search(question)) or bool(re.search(r"\(%\)|\bin %", question)) or \
        bool(re.search(r"\brates?\b", question, re.I) and "%" in question)
    return Expect(unit / 2 if unit else ABS_TOL, percent, bp)


def close(pred: float, gold: float, rel: float, abs_tol: float) -> bool:
    diff = abs(pred - gold)
    slack = 1e-9 * max(1.0, abs(gold))  # float noise: 0.0499 vs 0.05 is exactly 0.2%
    return diff <= rel * abs(gold) + slack or (abs(gold) < SMALL_GOLD and diff <= abs_tol + slack)


@dataclass
class Score:
    correct: bool          # explicit answer within tolerance (rescaled only where marked)
    correct_strict: bool   # explicit answer within 0.2%, no rescaling
    scaled: bool           # correct only after a marked percent / basis-point rescale
    correct_lenient: bool  # correct, or the fallback last number is


def _match(ex: Extraction, gold: float, expect: Expect) -> tuple[bool, bool]:
    """(right, right only after a rescale) for one extracted number."""
    if ex.value is None:
        return False, False
    if close(ex.value, gold, REL, expect.abs_tol):
        return True, False
    factors = set()
    if ex.is_percent or expect.percent:
        factors.add(100.0)
    if ex.is_bp or expect.basis_points:
        factors.add(10_000.0)
    # the reply's number is in percent (bp) and gold a fraction, or the other way round;
    # only the direction the reply's own mark allows when the question marks nothing
    for f in factors:
        ways = [gold * f] if (ex.is_percent or ex.is_bp) and not (expect.percent or expect.basis_points) \
            else [gold * f, gold / f]
        if any(close(ex.value, g, REL, expect.abs_tol) for g in ways):
            return True, True
    return False, False


def score(ex: Extraction, gold: float, expect: Expect = Expect()) -> Score:
    right, scaled = _match(ex, gold, expect)
    explicit = ex.explicit
    strict = explicit and ex.value is not None and close(ex.value, gold, STRICT_REL, expect.abs_tol)
    return Score(explicit and right, strict, explicit and scaled, right)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
