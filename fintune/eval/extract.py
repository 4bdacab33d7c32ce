"""Pull the numeric answer out of a model's reply, and score it.

Order of trust: `Final answer:` line, `\\boxed{}`, JSON {"answer": ...}; the last
number in the text is a fallback reported separately (method "last_number").
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

_NUM = r"\(?-?[$€£¥]?\s*-?\(?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?\)?\s*%?|\(?-?[$€£¥]?\s*-?\.\d+(?:[eE][-+]?\d+)?\)?\s*%?"
_FINAL = re.compile(r"final answer\s*(?:is)?\s*[:=]?\s*\**\s*(" + _NUM + ")", re.I)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_JSON = re.compile(r"\{[^{}]*\"answer\"\s*:[^{}]*\}")
_ANY = re.compile(_NUM)


@dataclass
class Extraction:
    value: float | None
    method: str  # final_answer | boxed | json | last_number | none
    is_percent: bool = False


def strip_reasoning(text: str) -> str:
    """Drop a DeepSeek-R1 style <think>...</think> block (or an unclosed one's prefix)."""
    if "</think>" in text:
        return text.split("</think>")[-1]
    return re.sub(r"<think>.*", "", text, flags=re.S) if "<think>" in text and "</think>" not in text else text


def parse_number(raw: str) -> tuple[float | None, bool]:
    s = raw.strip().rstrip(".")
    pct = s.endswith("%")
    neg = s.startswith("(") and s.endswith(")") or s.startswith("(") and ")" in s
    s = re.sub(r"[()%$€£¥\s]", "", s)
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    s = s.replace(",", "")
    try:
        v = float(s)
    except ValueError:
        return None, pct
    if neg and v > 0:
        v = -v
    return (v if math.isfinite(v) else None), pct


def extract(text: str) -> Extraction:
    body = strip_reasoning(text)
    finals = _FINAL.findall(body)
    if finals:
        v, pct = parse_number(finals[-1])
        if v is not None:
            return Extraction(v, "final_answer", pct)
    boxed = _BOXED.findall(body)
    if boxed:
        m = _ANY.search(boxed[-1])
        if m:
            v, pct = parse_number(m.group(0))
            if v is not None:
                return Extraction(v, "boxed", pct)
    for blob in reversed(_JSON.findall(body)):
        try:
            ans = json.loads(blob).get("answer")
        except json.JSONDecodeError:
            continue
        v, pct = parse_number(str(ans)) if ans is not None else (None, False)
        if v is not None:
            return Extraction(v, "json", pct)
    nums = _ANY.findall(body)
    for raw in reversed(nums):
        v, pct = parse_number(raw)
        if v is not None:
            return Extraction(v, "last_number", pct)
    return Extraction(None, "none")


@dataclass
class Score:
    correct: bool          # within 1% relative (or abs_tol near zero), scale-tolerant
    correct_strict: bool   # within 0.2% relative, same scale
    scaled: bool           # matched only after x100 or /100 (percent given for fraction or reverse)


def close(pred: float, gold: float, rel: float, abs_tol: float) -> bool:
    return abs(pred - gold) <= max(rel * abs(gold), abs_tol)


def score(pred: float | None, gold: float, rel: float = 0.01, strict_rel: float = 0.002,
          abs_tol: float = 0.005) -> Score:
    if pred is None:
        return Score(False, False, False)
    direct = close(pred, gold, rel, abs_tol)
    strict = close(pred, gold, strict_rel, abs_tol / 5)
    scaled = not direct and (close(pred / 100, gold, rel, abs_tol) or close(pred * 100, gold, rel, abs_tol))
    return Score(direct or scaled, strict, scaled)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))
