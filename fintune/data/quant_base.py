"""What every generated quant family is made of: a Problem (question, worked steps,
answer), the Family that draws one, the registry of families, and the one way
numbers are written in questions and solutions. The family modules import this;
nothing here imports them back."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from fintune.registry import Registry


@dataclass
class Problem:
    family: str
    template: int
    question: str
    steps: list[str]
    answer: float
    unit: str  # "percent", "currency", "ratio", "shares", "fraction"
    meta: dict = field(default_factory=dict)

    def solution(self) -> str:
        return "\n".join(self.steps + [f"Final answer: {fmt(self.answer)}"])


@dataclass
class Family:
    name: str
    templates: list[str]
    make: Callable[[random.Random], tuple[dict, list[str], float, str]]


FAMILIES: Registry[Family] = Registry("quant family")


def family(name: str, templates: list[str]):
    def deco(fn):
        FAMILIES.register(name, Family(name, templates, fn))
        return fn
    return deco


def fmt(x: float, digits: int = 4) -> str:
    """Round for display: 2 decimals for large values, up to `digits` otherwise."""
    if isinstance(x, int) or float(x).is_integer():
        return str(int(x))
    nd = 2 if abs(x) >= 100 else digits
    s = f"{x:.{nd}f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def money(x: float) -> str:
    return f"{x:,.2f}".rstrip("0").rstrip(".") if not float(x).is_integer() else f"{int(x):,}"


def rounded(x: float, nd: int = 6) -> float:
    return round(x, nd)


def pct(x: float) -> float:
    """Fraction -> percent, rounded the way answers are stated."""
    return round(100 * x, 2)
