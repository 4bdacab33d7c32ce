"""The calculate tool: finance arithmetic, formatting, hostile input, OpenAI-style calls."""
from __future__ import annotations

import json
import math
import time
import tracemalloc

import pytest

from fintune.calculator import (
    MAX_ARGS, MAX_DEPTH, MAX_LENGTH, TOOL_NAME, TOOL_SCHEMA, CalculatorError, calculate,
    evaluate, format_result, run_tool_call,
)

# Black-Scholes call, S=K=100, r=5%, sigma=20%, T=1: d1 = 0.35, d2 = 0.15
D1 = "(ln(100/100)+(0.05+0.2^2/2)*1)/(0.2*sqrt(1))"
D2 = "(ln(100/100)+(0.05-0.2^2/2)*1)/(0.2*sqrt(1))"


def _phi(x: float) -> float:
    """Standard normal CDF, written independently of the module under test."""
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


@pytest.mark.parametrize("expression, expected", [
    ("10000*(1+0.05)^3", 10000 * 1.05 ** 3),                  # compound interest
    ("(15000/10000)^(1/5)-1", 1.5 ** 0.2 - 1),                # CAGR
    ("1000*exp(0.05*3)", 1000 * math.exp(0.15)),              # continuous compounding
    (D1, 0.35),
    (D2, 0.15),
    (f"100*norm_cdf({D1}) - 100*exp(-0.05*1)*N({D2})",
     100 * _phi(0.35) - 100 * math.exp(-0.05) * _phi(0.15)),  # = 10.4506
    ("1000000*0.02*norm_ppf(0.99)", 1000000 * 0.02 * 2.3263478740408408),  # parametric VaR
    ("norm_inv(0.95)", 1.6448536269514722),
    ("norm_pdf(0)", 1 / math.sqrt(2 * math.pi)),
    ("npv(0.1, -100, 110)", 0.0),
    ("npv(0.281, -100, 39, 59, 55, 20)", -0.00847859163845488),
    ("npv(0.1, 50)", 50.0),                                    # cf0 is not discounted
    ("irr(-100, 110)", 0.1),
    ("irr(-100, 39, 59, 55, 20)", 0.28094842115996066),      # numpy-financial's example
    ("pmt(0.08/12, 10, 10000)", -1037.0320893591606),        # Excel PMT docs: -1,037.03
    ("fv(0.06/12, 10, -200, -500, 1)", 2581.4033740601),     # Excel FV docs: 2,581.40
    ("pv(0.08/12, 12*20, 500, 0, 0)", -59777.14585118777),   # Excel PV docs: -59,777.15
    ("pmt(0, 10, 1000)", -100.0), ("pmt(1e-300, 10000, 10000)", -1.0),  # tiny rate, no 0/0
    ("-2^2", -4.0), ("2^3^2", 512.0), ("2**-1", 0.5), ("2^-2^2", 0.0625), ("(-2)^2", 4.0),
    ("--3", 3.0), ("+-+3", -3.0), ("1-2-3", -4.0), ("8/4/2", 1.0), ("2*3+4*5-6/2", 23.0),
    (".5*2", 1.0), ("1.5e-3*1000", 1.5), ("2E3", 2000.0), ("e^1", math.e), ("2*pi", 2 * math.pi),
    ("log(8, 2)", 3.0), ("log(e)", 1.0), ("ln(e^2)", 2.0), ("log10(1000)", 3.0),
    ("abs(-3)", 3.0), ("min(7)", 7.0), ("max(-7)", -7.0), ("min(3, 1, 2)", 1.0),
    ("max(3, 1, 2)", 3.0), ("sum(0.1, 0.2, 0.3)", 0.6),
    ("round(2.675, 2)", 2.68), ("round(2.5)", 3.0), ("round(-2.5)", -3.0), ("round(1234.5, -2)", 1200.0),
    ("0^0", 1.0), ("(-8)^3", -512.0),
])
def test_evaluates_finance_expressions(expression, expected):
    assert evaluate(expression) == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("expression, text", [
    ("0.1+0.2", "0.3"), ("2+2", "4"), ("10000*(1+0.05)^3", "11576.25"), ("1/3", "0.3333333333"),
    ("2/3", "0.6666666667"), ("(15000/10000)^(1/5)-1", "0.0844717712"), ("-0", "0"), ("0*-1", "0"),
    ("-1234.5", "-1234.5"), ("1e14", "100000000000000"), ("123456789012345", "123456789000000"),
    ("99999999.99", "99999999.99"), ("999999999.99", "1000000000"), ("1e-6", "0.000001"),
    ("2/3*1e-5", "0.000006666666667"),
    ("1e-7", "1e-07"), ("1.23456789012e-9", "1.23456789e-09"), ("1e15", "1e+15"),
    (f"100*norm_cdf({D1}) - 100*exp(-0.05*1)*N({D2})", "10.45058357"),
])
def test_formats_ten_significant_digits(expression, text):
    assert calculate(expression) == text


def test_format_result_directly():
    assert format_result(-0.0) == "0"
    assert format_result(5.0) == "5"
    assert format_result(0.30000000000000004) == "0.3"
    assert format_result(99999999999999.99) == "100000000000000"
    assert "e" not in format_result(123456.789)


@pytest.mark.parametrize("expression, message", [
    ("x", "error: unknown name 'x'"),
    ("1/0", "error: division by zero"),
    ("(1+2))", "error: unexpected ')' at position 5"),
    ("1e308*10", "error: result too large"),
    ("10^400", "error: result too large"),
    ("1e16", "error: result too large"),
    ("ln(0)", "error: ln needs a number > 0"),
    ("sqrt(-1)", "error: sqrt of a negative number"),
    ("5%", "error: '%' is not supported: write 5% as 0.05"),
    ("", "error: empty expression"),
    ("   \n\t", "error: empty expression"),
    ("x" * (MAX_LENGTH + 1), f"error: expression longer than {MAX_LENGTH} characters"),
    ("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1), f"error: nesting deeper than {MAX_DEPTH}"),
    ("-" * 100 + "1", f"error: nesting deeper than {MAX_DEPTH}"),
    ("Exp(1)", "error: unknown function 'Exp' (did you mean 'exp'?)"),
    ("sqrt", "error: 'sqrt' is a function: write sqrt(...)"),
    ("sqrt(1, 2)", "error: sqrt takes 1 argument, got 2"),
    ("max()", f"error: max takes 1 to {MAX_ARGS} arguments, got 0"),
    ("irr(1, 2)", "error: irr needs both negative and positive cash flows"),
    ("irr(100, -300, 250)", "error: irr found no rate between -99% and 10000% where npv is 0"),
    ("(-8)^(1/3)", "error: negative number to a fractional power"),
    ("(1+2", "error: unexpected end of expression"),
    ("pmt(0.1, 0, 100)", "error: pmt needs a number of periods other than 0"),
    ("pv(-1, 10, 100)", "error: pv needs a rate greater than -1"),
    ("2 3", "error: unexpected '3' at position 2"),
    ("1" * 31, "error: number longer than 30 characters"),
    (None, "error: expression must be a string, got NoneType"),
])
def test_error_messages(expression, message):
    assert calculate(expression) == message


def test_thousands_separators_are_refused():
    assert "write 1000, not 1,000" in calculate("1,000")
    assert "write 1000, not 1,000" in calculate("2*(1,000)")
    assert "write 1000, not 1,000" in calculate("max(1,000)")  # '000' would be a second argument
    assert calculate("max(1,500)") == "500"  # the ambiguity the schema warns about


def test_nesting_at_the_limit_still_works():
    assert calculate("(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH) == "1"
    assert calculate("sqrt(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH) == "1"


def test_evaluate_raises_calculator_error_a_value_error():
    with pytest.raises(CalculatorError, match="unknown name 'y'"):
        evaluate("y + 1")
    assert issubclass(CalculatorError, ValueError)


HOSTILE = [
    "__import__('os')", "__import__(1)", "().__class__", "().__class__.__bases__[0].__subclasses__()",
    "a.b", "lambda x: x", "9**9**9", "9^9^9", "10^400", "(" * 10000 + "1" + ")" * 10000,
    "1e308*10", "1/0", "0^-1", "ln(0)", "sqrt(-1)", "", "   ", "9" * 100_000, "1" * 5000,
    "x", "open", "open('f')", "'1'", '"1"', "[1,2]", "{}", "1 if 1 else 2", "1;2", "nan", "inf",
    "-inf", "1e999", "-1e999", "max(" + ",".join(["1"] * 10000) + ")",
    "max(" + ",".join(["1"] * (MAX_ARGS + 1)) + ")", "irr(1,2,3)", "irr(100,-300,250)",
    "exp(1000)", "exp(exp(exp(10)))", "2^0.5^-9999", "1.2.3", "1..2", "1e", "2e+", "=1",
    "print(1)", "eval('1')", "\x00", "１+１", "−1", "3 × 4", "-" * 999 + "1", "(" * 500,
    ")" * 500, "+" * 999, "sqrt(" * 200, "1+" * 333 + "1", "pi(2)", "round(1, 1e9)",
    "norm_ppf(0)", "npv(-1, 1, 2)", "log(2, 1)", "pmt(0.1, 0, 100)", "pmt(0.1, 1, 1, 0, 2)",
    "\\", "@", "$100", "1_000", "0x10", "1j", "1 000",
    None, 5, 5.0, {"expression": "1"}, [1, 2], b"1+1", object(),
]


@pytest.mark.parametrize("expression", HOSTILE, ids=[repr(h)[:40] for h in HOSTILE])
def test_hostile_input_is_an_error_text_fast_and_small(expression):
    """Why never Python eval: eval("...", {"__builtins__": {}}) still reaches os through
    ().__class__.__base__.__subclasses__(), 9**9**9 builds a 370-million-digit integer
    (minutes of CPU, GBs of memory), deeply nested parentheses make CPython's parser raise
    (older versions crashed outright), and `^` is xor, so 2^3 silently gives 1."""
    tracemalloc.start()
    start = time.perf_counter()
    result = calculate(expression)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert isinstance(result, str) and result.startswith("error: "), result
    assert elapsed < 0.5
    assert peak < 10 * 2**20


def test_worst_case_valid_input_is_fast():
    flows = ",".join(["-100"] + ["7.5"] * (MAX_ARGS - 2))
    expression = f"irr({flows})"
    assert len(expression) <= MAX_LENGTH
    start = time.perf_counter()
    assert not calculate(expression).startswith("error")
    assert time.perf_counter() - start < 0.5


def test_tool_schema_is_an_openai_function_tool():
    json.dumps(TOOL_SCHEMA)
    assert TOOL_SCHEMA["type"] == "function"
    fn = TOOL_SCHEMA["function"]
    assert fn["name"] == TOOL_NAME == "calculate"
    assert fn["parameters"]["required"] == ["expression"]
    assert fn["parameters"]["properties"]["expression"]["type"] == "string"


@pytest.mark.parametrize("name, arguments, expected", [
    ("calculate", {"expression": "2+3"}, "5"),
    ("calculate", '{"expression": "10000*(1+0.05)^3"}', "11576.25"),
    ("calculate", '{"expression": "1/0"}', "error: division by zero"),
    ("calculate", '{"expression": 5}', "error: expression must be a string, got int"),
    ("calculate", {}, "error: missing argument 'expression'"),
    ("calculate", '{"expr": "1"}', "error: missing argument 'expression'"),
    ("calculate", "[1]", "error: missing argument 'expression'"),
    ("calculate", None, "error: missing argument 'expression'"),
    ("search", {"expression": "1"}, "error: unknown tool 'search'; the only tool is 'calculate'"),
    (None, {"expression": "1"}, "error: unknown tool 'None'; the only tool is 'calculate'"),
])
def test_run_tool_call(name, arguments, expected):
    assert run_tool_call(name, arguments) == expected


@pytest.mark.parametrize("arguments", ['{"expression": ', "not json", "[" * 100_000 + "]" * 100_000, ""])
def test_run_tool_call_bad_json_is_an_error_text(arguments):
    assert run_tool_call("calculate", arguments).startswith("error: ")
