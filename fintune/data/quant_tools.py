"""Every generated family's worked solution with the calculator: the same
`Formula:` and `Substitute:` lines as by hand, then `calculate` calls whose
expressions are written from the question's numbers, the tool's results, the
result line and `Final answer:`.

The results are the calculator's own (fintune/calculator.py run_tool_call), never
computed here, so the training text shows exactly what the tool returns. A builder
gets the problem's values and `calc(expression) -> result text`; it returns the
result line's name. A later call may use an earlier result, copied as the tool
printed it, which is what the model does when it chains calls.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from fintune.calculator import TOOL_NAME, run_tool_call
from fintune.data.quant_base import Problem, fmt
from fintune.registry import Registry

# decimals of the stated answer, as the by-hand solutions round it
DECIMALS = {"currency": 2, "percent": 2, "ratio": 4, "years": 4, "fraction": 4}


@dataclass
class ToolSolution:
    """`opening`: Formula and Substitute lines; `calls`: (expression, result) in order;
    `closing`: the result line and the final answer line."""
    opening: str
    calls: list[tuple[str, str]]
    closing: str


Builder = Callable[[dict, Callable[[str], str]], str]
BUILDERS: Registry[Builder] = Registry("tool solution")


def builds(*names: str):
    def deco(fn):
        for n in names:
            BUILDERS.register(n, fn)
        return fn
    return deco


def num(x) -> str:
    """A question's number as the calculator reads it: no thousands separators,
    a negative one in parentheses so it can follow any operator."""
    s = str(x).replace(",", "").replace("$", "").strip()
    return f"({s})" if s.startswith("-") else s


def frac(x) -> str:
    """A percentage as the fraction the Substitute line writes (5% -> 0.05)."""
    return num(fmt(float(str(x).replace(",", "")) / 100, 6))


def tool_solution(p: Problem) -> ToolSolution:
    """The tool-using worked solution of a generated problem. Raises ValueError when
    the calculator refuses a builder's expression (a bug in the builder)."""
    calls: list[tuple[str, str]] = []

    def calc(expression: str) -> str:
        result = run_tool_call(TOOL_NAME, {"expression": expression})
        if result.startswith("error"):
            raise ValueError(f"{p.family}: calculator refused {expression!r}: {result}")
        calls.append((expression, result))
        return result

    name = BUILDERS.get(p.family)(p.meta["values"], calc)
    value = float(calls[-1][1])
    if p.unit == "shares":
        result_line = f"{name} = {calls[-1][1]}, rounded down to {math.floor(value)}"
        answer = math.floor(value)
    else:
        answer = round(value, DECIMALS.get(p.unit, 4))
        result_line = f"{name} = {calls[-1][1]}{'%' if p.unit == 'percent' else ''}"
    return ToolSolution("\n".join(p.steps[:2]), calls, f"{result_line}\nFinal answer: {fmt(answer)}")


@builds("compound_interest")
def _compound(v, calc):
    calc(f"{num(v['P'])}*(1+{frac(v['r'])})^{v['n']}")
    return "FV"


@builds("cagr")
def _cagr(v, calc):
    calc(f"(({num(v['B'])}/{num(v['A'])})^(1/{v['n']})-1)*100")
    return "CAGR"


@builds("drawdown")
def _drawdown(v, calc):
    calc(f"({num(v['peak'])}-{num(v['trough'])})/{num(v['peak'])}*100")
    return "Drawdown"


@builds("max_drawdown")
def _max_drawdown(v, calc):
    prices = [int(x) for x in v["series"].split(", ")]
    terms, peak = ["0"], prices[0]
    for price in prices:
        peak = max(peak, price)
        if price < peak:
            terms.append(f"({peak}-{price})/{peak}")
    calc(f"max({','.join(terms)})*100")
    return "MDD"


@builds("sharpe_ratio")
def _sharpe(v, calc):
    calc(f"({num(v['R'])}-{num(v['rf'])})/{num(v['s'])}")
    return "Sharpe"


@builds("volatility_annualization")
def _vol(v, calc):
    calc(f"{num(v['v'])}*sqrt({v['N']})")
    return "σ_annual"


@builds("kelly_binary")
def _kelly(v, calc):
    p = frac(v["p"])
    calc(f"({num(v['b'])}*{p}-(1-{p}))/{num(v['b'])}*100")
    return "f*"


@builds("expected_value_trade")
def _ev(v, calc):
    p = frac(v["p"])
    calc(f"{p}*{num(v['W'])}-(1-{p})*{num(v['L'])}")
    return "EV"


@builds("breakeven_win_rate")
def _breakeven(v, calc):
    calc(f"1/(1+{num(v['R'])})*100")
    return "p"


@builds("position_size")
def _position(v, calc):
    calc(f"{num(v['A'])}*{frac(v['r'])}/({num(v['E'])}-{num(v['S'])})")
    return "shares"


@builds("capm_expected_return")
def _capm(v, calc):
    calc(f"{num(v['rf'])}+{num(v['beta'])}*({num(v['rm'])}-{num(v['rf'])})")
    return "E(R)"


@builds("continuous_compounding")
def _continuous(v, calc):
    calc(f"{num(v['P'])}*exp({frac(v['r'])}*{v['t']})")
    return "FV"


@builds("compound_return_series")
def _series(v, calc):
    factors = "*".join(f"(1{'+' if x >= 0 else '-'}{fmt(abs(x) / 100, 6)})" for x in v["rets"])
    calc(f"({factors}-1)*100")
    return "total"


@builds("sortino_ratio")
def _sortino(v, calc):
    rets, n = v["rets"], len(v["rets"])
    total = signed_sum(rets)
    squares = "+".join(f"({x})^2" for x in rets if x < 0)
    calc(f"(({total})/{n})/sqrt(({squares})/{n})")
    return "Sortino"


@builds("treynor_ratio")
def _treynor(v, calc):
    calc(f"({num(v['R'])}-{num(v['rf'])})/{num(v['beta'])}")
    return "Treynor"


@builds("information_ratio")
def _info(v, calc):
    calc(f"({num(v['Rp'])}-{num(v['Rb'])})/{num(v['te'])}")
    return "IR"


def signed_sum(xs) -> str:
    """-4.5, -0.1, 1.4 -> '-4.5-0.1+1.4'."""
    return "".join(f"{'+' if i and float(x) >= 0 else ''}{x}" for i, x in enumerate(xs))


@builds("beta_from_returns")
def _beta(v, calc):
    """Cov/Var in sums of the returns themselves, (nΣam - ΣaΣm) / (nΣm² - (Σm)²): one
    call, where the deviation form needs the means first (three calls, too long a row)."""
    a, m, n = v["ra"], v["rm"], len(v["rm"])
    sa, sm = f"({signed_sum(a)})", f"({signed_sum(m)})"
    sam = "+".join(f"{num(x)}*{num(y)}" for x, y in zip(a, m))
    smm = "+".join(f"{num(y)}^2" for y in m)
    calc(f"({n}*({sam})-{sa}*{sm})/({n}*({smm})-{sm}^2)")
    return "β"


@builds("kelly_continuous")
def _kelly_cont(v, calc):
    calc(f"({frac(v['mu'])}-{frac(v['r'])})/{frac(v['s'])}^2")
    return "f*"


_Z = {95: "1.6449", 99: "2.3263"}
_PDF_Z = {95: "0.10314", 99: "0.02665"}


@builds("parametric_var")
def _var(v, calc):
    calc(f"{_Z[v['c']]}*{frac(v['s'])}*{num(v['V'])}")
    return "VaR"


@builds("parametric_cvar")
def _cvar(v, calc):
    calc(f"{frac(v['s'])}*{num(v['V'])}*{_PDF_Z[v['c']]}/{fmt(1 - v['c'] / 100)}")
    return "ES"


def _flows(v) -> list[str]:
    return [num(x) for x in v["cf"]]


@builds("npv")
def _npv(v, calc):
    calc(f"npv({frac(v['r'])},-{num(v['C0'])},{','.join(_flows(v))})")
    return "NPV"


@builds("irr")
def _irr(v, calc):
    calc(f"irr(-{num(v['C0'])},{','.join(_flows(v))})*100")
    return "IRR"


def _bond_flows(v) -> list[str]:
    coupon = fmt(float(num(v["F"])) * v["c"] / 100)
    return [coupon] * (v["n"] - 1) + [f"{coupon}+{num(v['F'])}"]


@builds("bond_price")
def _bond(v, calc):
    calc(f"npv({frac(v['y'])},0,{','.join(_bond_flows(v))})")
    return "P"


@builds("yield_to_maturity")
def _ytm(v, calc):
    calc(f"irr(-{num(v['P'])},{','.join(_bond_flows(v))})*100")
    return "y"


@builds("macaulay_duration")
def _macaulay(v, calc):
    y, flows = frac(v["y"]), _bond_flows(v)
    weighted = "+".join(f"{t}*({cf})/(1+{y})^{t}" for t, cf in enumerate(flows, 1))
    calc(f"({weighted})/npv({y},0,{','.join(flows)})")
    return "D"


@builds("modified_duration")
def _modified(v, calc):
    calc(f"{num(v['D'])}/(1+{frac(v['y'])})")
    return "D_mod"


def _d1(v) -> tuple[str, str, str, str, str, str]:
    """S, K, T, r, σ and d1's expression. d1 is written out where it is used, not
    computed by a call first: a call costs more tokens than the repeated text."""
    S, K, T, r, s = num(v["S"]), num(v["K"]), num(v["T"]), frac(v["r"]), frac(v["s"])
    return S, K, T, r, s, f"(ln({S}/{K})+({r}+{s}^2/2)*{T})/({s}*sqrt({T}))"


@builds("black_scholes_call")
def _bs_call(v, calc):
    S, K, T, r, s, d1 = _d1(v)
    calc(f"{S}*N({d1})-{K}*exp(-{r}*{T})*N({d1}-{s}*sqrt({T}))")
    return "C"


@builds("black_scholes_put")
def _bs_put(v, calc):
    S, K, T, r, s, d1 = _d1(v)
    calc(f"{K}*exp(-{r}*{T})*N({s}*sqrt({T})-{d1})-{S}*N(-{d1})")
    return "P"


@builds("put_call_parity")
def _parity(v, calc):
    calc(f"{num(v['C'])}-{num(v['S'])}+{num(v['K'])}*exp(-{frac(v['r'])}*{num(v['T'])})")
    return "P"
