"""The `calculate` tool that the fine-tuned finance model calls.

A hand-written tokenizer and precedence-climbing parser over floats, not simpleeval or
asteval: both ast.parse model text, so `^` is Python's xor, `-`*100000 is a MemoryError
in CPython's parser (201 nested parentheses a SyntaxError), and they must guard every
AST node and big-int power (simpleeval runs 3999999**3999999 for over 30 s). Our grammar
has exactly the operators we allow, and floats cannot grow without bound.

`calculate(text) -> str` never raises: 10 significant digits or "error: ..." for the
model (positions 0-based). `evaluate(text) -> float` raises CalculatorError.
"""
from __future__ import annotations

import json
import math
import re
from decimal import ROUND_HALF_UP, Context, Decimal, localcontext
from statistics import NormalDist
from typing import NamedTuple

TOOL_NAME = "calculate"
MAX_LENGTH = 1000      # a worked finance step fits easily; bounds all later work
MAX_TOKENS = 500       # npv/irr with 100 signed cash flows needs about 300
MAX_DEPTH = 64         # parens/calls/unary/power nesting; keeps Python's stack shallow
MAX_ARGS = 100         # cash flows per npv/irr call; more is a runaway generation
MAX_NUMBER_LEN = 30    # longer literals exceed float precision and are likely garbage
MAX_EXPONENT = 1e4     # no finance formula needs x^y with |y| above this
MAX_RESULT = 1e15      # above this a 10-digit answer is no longer exact to the unit
IRR_MAX_ITER = 200     # bisection halves the bracket each step; float precision runs out first

TOOL_SCHEMA = {"type": "function", "function": {
    "name": TOOL_NAME,
    "description": "Evaluate an arithmetic expression and return the number. Operators + - * / ^ "
                   "and parentheses; functions exp ln log log10 sqrt abs min max round sum "
                   "norm_cdf norm_pdf norm_ppf npv irr pv fv pmt; constants pi e.",
    "parameters": {"type": "object", "required": ["expression"], "properties": {"expression": {
        "type": "string", "description": "e.g. 10000*(1+0.05)^3. Write 5% as 0.05; "
                                         "no thousands separators (1000, not 1,000)."}}}}}


class CalculatorError(ValueError):
    """An expression the calculator cannot evaluate; the message is shown to the model."""


class _Token(NamedTuple):
    kind: str  # "num", "name", "op" or "end"
    text: str
    pos: int


_TOKEN = re.compile(r"(?P<num>(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
                    r"|(?P<name>[A-Za-z_][A-Za-z_0-9]*)|(?P<op>\*\*|[-+*/^(),])", re.ASCII)
_SPACE = re.compile(r"\s*", re.ASCII)
_HINTS = {"%": "'%' is not supported: write 5% as 0.05", "×": "use * to multiply",
          "÷": "use / to divide", "−": "use the ASCII '-' for minus"}
_COMMA_HINT = " (commas only separate function arguments; write 1000, not 1,000)"


def _short(text: str) -> str:
    """Quote text for an error message, cut so a 1,000-char name stays readable."""
    return repr(text if len(text) <= 30 else text[:30] + "...")


def _tokenize(text: str) -> list[_Token]:
    tokens, pos = [], _SPACE.match(text).end()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            char = text[pos]
            raise CalculatorError(_HINTS.get(char) or f"unexpected character {char!r} at position {pos}")
        if len(tokens) >= MAX_TOKENS:
            raise CalculatorError(f"expression has more than {MAX_TOKENS} tokens")
        tokens.append(_Token(m.lastgroup, m.group(), pos))
        pos = _SPACE.match(text, m.end()).end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _number(text: str) -> float:
    if len(text) > MAX_NUMBER_LEN:
        raise CalculatorError(f"number longer than {MAX_NUMBER_LEN} characters")
    if re.match(r"0[0-9]", text):  # '000' is what '1,000' leaves as an argument
        raise CalculatorError(f"number {_short(text)} has a leading zero" + _COMMA_HINT)
    if math.isinf(float(text)):
        raise CalculatorError(f"number {_short(text)} is too large")
    return float(text)


def _check(value: float) -> float:
    """Every intermediate must stay finite: inf/nan would surface as a bogus answer."""
    if not math.isfinite(value):
        raise CalculatorError("result too large" if math.isinf(value) else "result is not a number")
    return value


def _pow(base: float, exp: float) -> float:
    if abs(exp) > MAX_EXPONENT:
        raise CalculatorError(f"exponent {exp:.10g} is too large (limit {MAX_EXPONENT:.0f})")
    if base == 0 and exp < 0:
        raise CalculatorError("division by zero (0 to a negative power)")
    if base < 0 and exp != int(exp):
        raise CalculatorError("negative number to a fractional power")
    try:
        return _check(math.pow(base, exp))
    except OverflowError:
        raise CalculatorError("result too large") from None


def _guard(fn, ok, why: str):
    """fn with its domain checked first, so the model reads why, not 'math domain error'."""
    def call(*args):
        if not ok(*args):
            raise CalculatorError(why)
        return fn(*args)
    return call


def _log(x: float, base: float = math.e) -> float:
    if x <= 0 or base <= 0 or base == 1:
        raise CalculatorError("log needs x > 0 and a base > 0 other than 1")
    return math.log(x) / math.log(base)


def _round(x: float, ndigits: float = 0) -> float:
    """Excel's ROUND: ties away from zero on the decimal shown (round(2.675, 2) = 2.68),
    where Python's round gives 2.67, and round(2.5) = 3, not 2."""
    if ndigits != int(ndigits) or abs(ndigits) > 15:
        raise CalculatorError("round digits must be a whole number from -15 to 15")
    with localcontext(Context(prec=400, rounding=ROUND_HALF_UP)):  # a float has <= 309 digits
        return float(Decimal(repr(x)).quantize(Decimal(1).scaleb(-int(ndigits))))


def _npv_at(rate: float, flows) -> float:
    """cf0 at t=0, undiscounted. An iterated discount factor never overflows."""
    if rate <= -1:
        raise CalculatorError("npv rate must be greater than -1")
    total, factor, step = 0.0, 1.0, 1.0 / (1.0 + rate)
    for cf in flows:
        total, factor = total + cf * factor, factor * step
    return total


_IRR_GRID = (-0.99, -0.9, -0.75, -0.5, -0.3, -0.2, -0.1, -0.05, 0.0, 0.02, 0.05, 0.1,
             0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 100.0)


def _irr(*flows: float) -> float:
    """Bisection inside a bracket where npv changes sign; of several, the one nearest 0%."""
    if not (any(cf < 0 for cf in flows) and any(cf > 0 for cf in flows)):
        raise CalculatorError("irr needs both negative and positive cash flows")
    values = [(r, _npv_at(r, flows)) for r in _IRR_GRID]
    brackets = [(a, fa, b) for (a, fa), (b, fb) in zip(values, values[1:]) if fa * fb <= 0]
    if not brackets:
        raise CalculatorError("irr found no rate between -99% and 10000% where npv is 0")
    lo, flo, hi = min(brackets, key=lambda br: abs(br[0] + br[2]))
    for _ in range(IRR_MAX_ITER):
        mid = (lo + hi) / 2
        fmid = _npv_at(mid, flows)
        if flo == 0 or fmid == 0 or not lo < mid < hi:  # a root, or float precision reached
            return lo if flo == 0 else mid
        lo, flo, hi = (mid, fmid, hi) if (fmid < 0) == (flo < 0) else (lo, flo, mid)
    return (lo + hi) / 2


def _tvm(solve: str):
    """Excel's PV/FV/PMT, from pv*(1+r)^n + pmt*(1+r*type)*((1+r)^n-1)/r + fv = 0
    (cash paid out is negative): fv(rate,nper,pmt,[pv]), pv(rate,nper,pmt,[fv]), pmt(rate,nper,pv,[fv])."""
    def tvm(rate, nper, x, y=0.0, typ=0.0):
        if typ not in (0, 1):
            raise CalculatorError("payment type must be 0 (end of period) or 1 (start)")
        if rate <= -1:
            raise CalculatorError(f"{solve} needs a rate greater than -1")
        if solve == "pmt" and nper == 0:
            raise CalculatorError("pmt needs a number of periods other than 0")
        growth = _pow(1 + rate, nper)  # expm1/log1p: (1+r)^n - 1 stays exact for tiny r
        annuity = nper if rate == 0 else (1 + rate * typ) * math.expm1(nper * math.log1p(rate)) / rate
        if solve == "fv":
            return -(y * growth + x * annuity)
        return -(y + x * annuity) / growth if solve == "pv" else -(y + x * growth) / annuity
    return tvm


_NORMAL = NormalDist()
_PPF = _guard(_NORMAL.inv_cdf, lambda p: 0 < p < 1, "norm_ppf needs a probability between 0 and 1")
_FUNCTIONS = {  # name -> (function, fewest args, most args)
    "exp": (math.exp, 1, 1), "log": (_log, 1, 2), "abs": (abs, 1, 1), "round": (_round, 1, 2),
    "ln": (_guard(math.log, lambda x: x > 0, "ln needs a number > 0"), 1, 1),
    "log10": (_guard(math.log10, lambda x: x > 0, "log10 needs a number > 0"), 1, 1),
    "sqrt": (_guard(math.sqrt, lambda x: x >= 0, "sqrt of a negative number"), 1, 1),
    "min": (lambda *xs: min(xs), 1, MAX_ARGS), "max": (lambda *xs: max(xs), 1, MAX_ARGS),
    "sum": (lambda *xs: math.fsum(xs), 1, MAX_ARGS),
    "norm_cdf": (_NORMAL.cdf, 1, 1), "N": (_NORMAL.cdf, 1, 1), "norm_pdf": (_NORMAL.pdf, 1, 1),
    "norm_ppf": (_PPF, 1, 1), "norm_inv": (_PPF, 1, 1),
    "npv": (lambda rate, *flows: _npv_at(rate, flows), 2, MAX_ARGS), "irr": (_irr, 2, MAX_ARGS),
    "pv": (_tvm("pv"), 3, 5), "fv": (_tvm("fv"), 3, 5), "pmt": (_tvm("pmt"), 3, 5),
}
_CONSTANTS = {"pi": math.pi, "e": math.e}


def _call(name: str, args: list[float]) -> float:
    fn, low, high = _FUNCTIONS[name]
    if not low <= len(args) <= high:
        want = str(low) if low == high else f"{low} to {high}"
        raise CalculatorError(f"{name} takes {want} argument{'s' * (high > 1)}, got {len(args)}")
    try:
        return _check(float(fn(*args)))
    except OverflowError:
        raise CalculatorError("result too large") from None
    except CalculatorError:
        raise
    except ZeroDivisionError:
        raise CalculatorError(f"division by zero in {name}") from None
    except ValueError:
        raise CalculatorError(f"invalid argument to {name}") from None


def _binary(op: str, a: float, b: float) -> float:
    if op == "/" and b == 0:
        raise CalculatorError("division by zero")
    return _check({"+": a + b, "-": a - b, "*": a * b}[op] if op != "/" else a / b)


_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


class _Parser:
    """expr := unary ((+|-|*|/) unary)* by precedence; unary := (-|+) unary | power;
    power := primary [(^|**) unary]  (right-associative, above unary minus: -2^2 = -4);
    primary := number | name | name '(' [expr (',' expr)*] ')' | '(' expr ')'."""

    def __init__(self, text: str):
        self.tokens, self.i, self.depth = _tokenize(text), 0, 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        self.i += 1
        return self.tokens[self.i - 1]

    def nested(self, parse):
        """Count nesting before recursing, so deep input fails cleanly, never with RecursionError."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise CalculatorError(f"nesting deeper than {MAX_DEPTH}")
        value = parse()
        self.depth -= 1
        return value

    @staticmethod
    def unexpected(tok: _Token) -> CalculatorError:
        if tok.kind == "end":
            return CalculatorError("unexpected end of expression")
        hint = _COMMA_HINT if tok.text == "," else ""
        return CalculatorError(f"unexpected {_short(tok.text)} at position {tok.pos}{hint}")

    def parse(self) -> float:
        value = self.expr()
        if self.peek().kind != "end":
            raise self.unexpected(self.peek())
        return value

    def expr(self, min_precedence: int = 1) -> float:
        """Precedence climbing; recursion here is at most two levels (+- then */)."""
        value = self.unary()
        while self.peek().kind == "op" and _PRECEDENCE.get(self.peek().text, 0) >= min_precedence:
            op = self.take().text
            value = _binary(op, value, self.expr(_PRECEDENCE[op] + 1))
        return value

    def unary(self) -> float:
        if self.peek().text in ("-", "+"):
            sign = self.take().text
            value = self.nested(self.unary)
            return -value if sign == "-" else value
        base = self.primary()
        if self.peek().text in ("^", "**"):
            self.take()
            return _pow(base, self.nested(self.unary))
        return base

    def primary(self) -> float:
        tok = self.take()
        if tok.kind == "num":
            return _number(tok.text)
        if tok.kind == "name":
            return self.name(tok.text)
        if tok.text == "(":
            value = self.nested(self.expr)
            if self.take().text == ")":
                return value
            tok = self.tokens[self.i - 1]
        raise self.unexpected(tok)

    def name(self, name: str) -> float:
        is_call = self.peek().text == "("
        if is_call and name in _FUNCTIONS:
            self.take()
            return _call(name, self.nested(self.arguments))
        if not is_call and name in _CONSTANTS:
            return _CONSTANTS[name]
        if name in _FUNCTIONS:
            raise CalculatorError(f"{name!r} is a function: write {name}(...)")
        lower = name.lower()
        known = lower != name and (lower in _FUNCTIONS or lower in _CONSTANTS)
        hint = f" (did you mean {lower!r}?)" if known else ""
        raise CalculatorError(f"unknown {'function' if is_call else 'name'} {_short(name)}{hint}")

    def arguments(self) -> list[float]:
        args: list[float] = []
        if self.peek().text == ")":
            self.take()
            return args
        while len(args) < MAX_ARGS:
            args.append(self.expr())
            tok = self.take()
            if tok.text == ")":
                return args
            if tok.text != ",":
                raise self.unexpected(tok)
        raise CalculatorError(f"more than {MAX_ARGS} arguments")


def evaluate(expression) -> float:
    """The value of `expression` as a float; raises CalculatorError with a model-readable reason."""
    if not isinstance(expression, str):
        raise CalculatorError(f"expression must be a string, got {type(expression).__name__}")
    if len(expression) > MAX_LENGTH:
        raise CalculatorError(f"expression longer than {MAX_LENGTH} characters")
    if not expression.strip():
        raise CalculatorError("empty expression")
    value = _Parser(expression).parse()
    if abs(value) > MAX_RESULT:
        raise CalculatorError("result too large")
    return value


def format_result(x: float) -> str:
    """10 significant digits; plain decimals for 1e-6 <= |x| < 1e15; no '.0', no '-0'."""
    if x == 0:
        return "0"
    exponent = int(f"{x:.9e}".split("e")[1])  # the exponent after rounding to 10 digits
    if not -6 <= exponent < 15:
        return f"{x:.10g}"
    decimals = max(0, 9 - exponent)
    text = f"{round(x, 9 - exponent) if decimals == 0 else x:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def calculate(expression) -> str:
    """The tool: the result as text, or 'error: ...'. Never raises."""
    try:
        return format_result(evaluate(expression))
    except CalculatorError as exc:
        return f"error: {exc}"
    except Exception as exc:  # a bug here must not crash a chat or an eval run
        return f"error: could not evaluate the expression ({type(exc).__name__})"


def run_tool_call(name, arguments) -> str:
    """Run one tool call as an OpenAI-style client delivers it (arguments: dict or JSON text)."""
    try:
        if name != TOOL_NAME:
            return f"error: unknown tool {_short(str(name))}; the only tool is '{TOOL_NAME}'"
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError as exc:
                return f"error: arguments are not valid JSON ({exc})"
        if not isinstance(arguments, dict) or "expression" not in arguments:
            return "error: missing argument 'expression'"
        return calculate(arguments["expression"])
    except Exception as exc:  # e.g. RecursionError from json on deeply nested input
        return f"error: could not run the tool call ({type(exc).__name__})"
