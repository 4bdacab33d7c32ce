"""Quant-reasoning problems with gold answers computed in code.

Every family draws realistic numbers, picks one of several phrasings, and writes
an answer that goes formula -> substituted numbers -> intermediate results ->
``Final answer: <number>``. Intermediate results are written one operation per
line: a small model learns the format at once, but only learns the arithmetic
when each step is short.

The last phrasing of every family is reserved for the held-out split, so the
evaluation can measure whether the model generalizes to unseen wording.
"""
from __future__ import annotations

import math
import random
from typing import Callable

from fintune.data import quant_families, quant_pricing  # noqa: F401 - register the other families, in this order
from fintune.data.quant_base import FAMILIES, Family, Problem, family, fmt, money, pct, rounded

__all__ = ["FAMILIES", "Family", "Problem", "family", "fmt", "money", "pct", "rounded", "generate", "generate_set",
           "generate_unseen", "curriculum_digest"]




@family("compound_interest", [
    "You invest ${P} at an annual interest rate of {r}% compounded yearly. What is the value after {n} years, in dollars?",
    "A deposit of ${P} earns {r}% per year, compounded annually. How much is it worth in {n} years (in dollars)?",
    "What is the future value in dollars of ${P} growing at {r}% a year for {n} years with annual compounding?",
    "How much will ${P} be worth after {n} years at {r}% interest compounded annually? Answer in dollars.",
    "Principal ${P}, annual rate {r}%, {n} years, yearly compounding. Future value in dollars?",
    "I save ${P} at {r}% a year, compounded annually. What will the savings be worth in {n} years, in dollars?",
    "Future value in dollars: ${P} at {r}% compounded yearly for {n} years?",
    "Calculate what ${P} grows to in {n} years at {r}% annual interest with yearly compounding, in dollars.",
    "My bank pays {r}% compounded annually. If I leave ${P} there for {n} years, how much will I have, in dollars?",
    "Given P = ${P}, r = {r}% per year and n = {n} years (annual compounding), find FV in dollars.",
    "If ${P} is placed in an account paying {r}% annually (compounded once a year), what will the balance be after {n} years, in dollars?",
])
def _compound(rng):
    P = rng.randrange(1000, 20001, 500)
    r = rng.randint(2, 12)
    n = rng.randint(2, 6)
    g = 1 + r / 100
    steps = ["Formula: FV = P × (1 + r)^n", f"Substitute: P = {P}, r = {fmt(r / 100)}, n = {n}"]
    acc = 1.0
    for k in range(1, n + 1):
        acc = rounded(acc * g)
        steps.append(f"(1 + r)^{k} = {fmt(acc, 6)}")
    fv = round(P * acc, 2)
    steps.append(f"FV = {P} × {fmt(acc, 6)} = {fmt(fv)}")
    return {"P": money(P), "r": r, "n": n}, steps, fv, "currency"


@family("cagr", [
    "An investment grew from ${A} to ${B} over {n} years. What is its compound annual growth rate, in percent?",
    "A portfolio was worth ${A} and is now worth ${B}, {n} years later. Compute the CAGR in percent.",
    "Starting value ${A}, ending value ${B}, holding period {n} years. What is the CAGR (in percent)?",
    "From ${A} to ${B} in {n} years: what is the compound annual growth rate (percent)?",
    "My account went from ${A} to ${B} over {n} years. What was my average annual compounded return, in percent?",
    "Find the CAGR in percent for a value that started at ${A} and finished at ${B} after {n} years.",
    "Initial amount ${A}, final amount ${B}, {n} years: CAGR as a percent?",
    "Calculate the compound annual growth rate (percent) of an asset that went from ${A} to ${B} in {n} years.",
    "Over {n} years a holding rose (or fell) from ${A} to ${B}. What yearly compounded rate of growth is that, in percent?",
    "What constant yearly return in percent takes ${A} to ${B} over {n} years with compounding?",
    "What annual growth rate, compounded, turns ${A} into ${B} in {n} years? Answer in percent.",
])
def _cagr(rng):
    A = rng.randrange(1000, 20001, 500)
    n = rng.randint(2, 8)
    B = round(A * (1 + rng.uniform(-0.05, 0.2)) ** n / 100) * 100
    ratio = rounded(B / A)
    root = rounded(ratio ** (1 / n))
    cagr = pct(root - 1)
    steps = ["Formula: CAGR = (End / Start)^(1/n) - 1", f"Substitute: End = {B}, Start = {A}, n = {n}",
             f"End / Start = {B} / {A} = {fmt(ratio, 6)}",
             f"{fmt(ratio, 6)}^(1/{n}) = {fmt(root, 6)}",
             f"CAGR = {fmt(root, 6)} - 1 = {fmt(root - 1, 6)} = {fmt(cagr)}%"]
    return {"A": money(A), "B": money(B), "n": n}, steps, cagr, "percent"


@family("drawdown", [
    "A stock peaked at ${peak} and then fell to ${trough}. What was the drawdown from the peak, in percent?",
    "A fund's value dropped from a high of ${peak} to a low of ${trough}. Compute the drawdown in percent.",
    "Peak equity was ${peak}; the lowest point afterwards was ${trough}. How deep was the drawdown, in percent?",
    "Price high ${peak}, subsequent low ${trough}. Drawdown in percent?",
    "My portfolio hit ${peak} and later dropped to ${trough}. How big was the drawdown, in percent?",
    "What percentage decline is it from a peak of ${peak} to a trough of ${trough}?",
    "High ${peak}, low ${trough} afterwards: drawdown in percent?",
    "Calculate the percentage drawdown when an asset falls from its peak of ${peak} to ${trough}.",
    "My account was at ${peak} at its best and then dropped to ${trough}. What percent drawdown is that?",
    "How far below its high, in percent, is a price of ${trough} after a peak of ${peak}?",
    "From a top of ${peak} the price slid to ${trough}. By what percent is it below its peak?",
])
def _drawdown(rng):
    peak = rng.randrange(50, 1001, 5)
    trough = round(peak * rng.uniform(0.5, 0.97))
    diff = peak - trough
    frac = rounded(diff / peak)
    dd = pct(diff / peak)
    steps = ["Formula: Drawdown = (Peak - Trough) / Peak", f"Substitute: Peak = {peak}, Trough = {trough}",
             f"Peak - Trough = {peak} - {trough} = {diff}",
             f"{diff} / {peak} = {fmt(frac, 6)}", f"Drawdown = {fmt(frac, 6)} × 100 = {fmt(dd)}%"]
    return {"peak": money(peak), "trough": money(trough)}, steps, dd, "percent"


@family("max_drawdown", [
    "Closing prices were {series}. What is the maximum drawdown, in percent?",
    "A price series reads {series}. Compute its maximum peak-to-trough drawdown in percent.",
    "Given the daily closes {series}, what was the largest drawdown from a running peak, in percent?",
    "Prices: {series}. Largest peak-to-trough decline in percent?",
    "What is the maximum drawdown (percent) of a portfolio whose values were {series}?",
    "Find the worst drop from a previous high, in percent, in the price path {series}.",
    "Series {series}: maximum drawdown in percent?",
    "Calculate the maximum drawdown, in percent, of the closing prices {series}.",
    "My account values over time were {series}. What was my worst peak-to-trough loss, in percent?",
    "Given the prices {series}, find the largest fall from a running high, in percent.",
    "An equity curve went {series}. Find the maximum drawdown (percent).",
])
def _max_drawdown(rng):
    prices = [rng.randrange(80, 121)]
    for _ in range(rng.randint(4, 6)):
        prices.append(max(10, prices[-1] + rng.randint(-15, 12)))
    steps = ["Formula: MDD = max over t of (running peak - price_t) / running peak",
             f"Substitute: prices = {', '.join(map(str, prices))}"]
    peak, best = prices[0], (0.0, prices[0], prices[0])
    for p in prices:
        peak = max(peak, p)
        dd = rounded((peak - p) / peak)
        steps.append(f"price {p}: peak {peak}, drawdown ({peak} - {p}) / {peak} = {fmt(dd, 6)}")
        if dd > best[0]:
            best = (dd, peak, p)
    mdd = pct(best[0])
    steps.append(f"Largest drawdown = {fmt(best[0], 6)} = {fmt(mdd)}%")
    return {"series": ", ".join(map(str, prices))}, steps, mdd, "percent"


@family("sharpe_ratio", [
    "A portfolio returned {R}% a year with volatility of {s}%. The risk-free rate is {rf}%. What is the Sharpe ratio?",
    "Annual return {R}%, annual standard deviation {s}%, risk-free rate {rf}%. Compute the Sharpe ratio.",
    "What is the Sharpe ratio of a strategy earning {R}% per year with {s}% annualized volatility when T-bills yield {rf}%?",
    "Return {R}%, volatility {s}%, risk-free rate {rf}%. Sharpe ratio?",
    "What Sharpe ratio does a portfolio have if it earns {R}% a year with {s}% volatility and cash yields {rf}%?",
    "Find the Sharpe ratio: expected return {R}%, risk-free {rf}%, standard deviation {s}%.",
    "R {R}%, Rf {rf}%, σ {s}%: Sharpe ratio?",
    "Calculate the Sharpe ratio of a portfolio with a {R}% return, a {s}% standard deviation and a {rf}% risk-free rate.",
    "My fund made {R}% with {s}% volatility while T-bills paid {rf}%. What is its Sharpe ratio?",
    "Given R = {R}%, Rf = {rf}% and σ = {s}%, find (R - Rf) / σ.",
    "A fund has an expected return of {R}%, a risk-free rate of {rf}% applies, and its return standard deviation is {s}%. Find its Sharpe ratio.",
])
def _sharpe(rng):
    R = round(rng.uniform(4, 25), 1)
    rf = round(rng.uniform(0.5, 5), 1)
    s = round(rng.uniform(5, 35), 1)
    ex = round(R - rf, 1)
    sh = round(ex / s, 4)
    steps = ["Formula: Sharpe = (R - Rf) / σ", f"Substitute: R = {R}%, Rf = {rf}%, σ = {s}%",
             f"R - Rf = {R} - {rf} = {fmt(ex)}", f"Sharpe = {fmt(ex)} / {s} = {fmt(sh)}"]
    return {"R": R, "rf": rf, "s": s}, steps, sh, "ratio"


PERIODS = {"daily": 252, "weekly": 52, "monthly": 12}


@family("volatility_annualization", [
    "A stock's {per} return volatility is {v}%. Assuming {N} {unit} per year, what is its annualized volatility in percent?",
    "The standard deviation of {per} returns is {v}%. Annualize it using {N} periods per year (answer in percent).",
    "With {per} volatility of {v}% and {N} {unit} in a year, what is the annual volatility, in percent?",
    "Volatility of {per} returns: {v}%. With {N} {unit} a year, what is the annualized volatility, in percent?",
    "Annualize a {v}% {per} standard deviation of returns ({N} {unit} per year). Answer in percent.",
    "What is the yearly volatility in percent if {per} returns have a standard deviation of {v}% and there are {N} {unit} per year?",
    "{per} volatility {v}%, {N} {unit} a year: annualized volatility in percent?",
    "Calculate the annualized volatility, in percent, from a {per} standard deviation of {v}% with {N} {unit} per year.",
    "My strategy's {per} returns have a standard deviation of {v}%. With {N} {unit} in a year, what is its annual volatility in percent?",
    "Given a {per} σ of {v}% and {N} periods per year, find σ × √{N} in percent.",
    "Convert a {per} volatility of {v}% into an annualized figure, in percent, using the square-root-of-time rule with {N} periods a year.",
])
def _vol(rng):
    per = rng.choice(list(PERIODS))
    N = PERIODS[per]
    v = round(rng.uniform(0.5, 3.0) if per == "daily" else rng.uniform(1.5, 9.0), 2)
    root = rounded(math.sqrt(N), 4)
    ann = round(v * root, 2)
    unit = {"daily": "trading days", "weekly": "weeks", "monthly": "months"}[per]
    steps = ["Formula: σ_annual = σ_period × sqrt(N)", f"Substitute: σ_period = {v}%, N = {N}",
             f"sqrt({N}) = {fmt(root)}", f"σ_annual = {v} × {fmt(root)} = {fmt(ann)}%"]
    return {"per": per, "v": v, "N": N, "unit": unit}, steps, ann, "percent"


@family("kelly_binary", [
    "A bet wins with probability {p}% and pays {b} to 1. What fraction of the bankroll does the Kelly criterion stake, in percent?",
    "You win {p}% of the time and a win pays {b} times the stake. Compute the Kelly bet size as a percent of capital.",
    "Win probability {p}%, net odds {b}:1. What is the Kelly fraction, in percent?",
    "Odds {b} to 1, chance of winning {p}%. Kelly stake as a percent of bankroll?",
    "What percentage of my bankroll should I bet, per the Kelly criterion, on a {p}% chance of a {b}:1 payoff?",
    "Kelly sizing: p = {p}%, b = {b}. Optimal bet in percent of capital?",
    "p = {p}%, odds {b}:1: Kelly fraction in percent?",
    "Calculate the Kelly stake, in percent of bankroll, for a bet with a {p}% win probability at net odds of {b} to 1.",
    "I win {p}% of my bets and each win pays {b} times my stake. How much of my bankroll should I bet, in percent, by Kelly?",
    "Given win probability {p}% and payoff {b} to 1, find f* = (b × p - q) / b in percent.",
    "What percent of capital should a Kelly bettor risk on a wager with a {p}% chance of winning {b} times the stake (and losing the stake otherwise)?",
])
def _kelly(rng):
    b = rng.choice([1, 1.5, 2, 2.5, 3])
    p = rng.randint(40, 70)
    if b * p / 100 - (1 - p / 100) <= 0:
        p = 70
    q = 100 - p
    num = round(b * p / 100 - q / 100, 4)
    f = num / b
    steps = ["Formula: f* = (b × p - q) / b, with q = 1 - p", f"Substitute: b = {fmt(b)}, p = {fmt(p / 100)}, q = {fmt(q / 100)}",
             f"b × p = {fmt(b)} × {fmt(p / 100)} = {fmt(b * p / 100)}",
             f"b × p - q = {fmt(b * p / 100)} - {fmt(q / 100)} = {fmt(num)}",
             f"f* = {fmt(num)} / {fmt(b)} = {fmt(rounded(f))} = {fmt(pct(f))}%"]
    return {"p": p, "b": fmt(b)}, steps, pct(f), "percent"


@family("expected_value_trade", [
    "A setup wins {p}% of the time for an average gain of ${W} and loses ${L} otherwise. What is the expected value per trade, in dollars?",
    "Win rate {p}%, average win ${W}, average loss ${L}. Compute the expectancy per trade in dollars.",
    "What is the expected profit per trade (dollars) of a system that makes ${W} on wins, loses ${L} on losses and wins {p}% of trades?",
    "Probability of a win {p}%, average winner ${W}, average loser ${L}. Expected value per trade in dollars?",
    "A trading system wins {p}% of the time. Winners make ${W} and losers cost ${L}. What does it earn per trade on average, in dollars?",
    "Compute the expectancy in dollars: wins of ${W} with {p}% probability, losses of ${L} otherwise.",
    "Win {p}% for +${W}, lose ${L} otherwise: expectancy per trade in dollars?",
    "Calculate the average dollar profit per trade when {p}% of trades win ${W} and the rest lose ${L}.",
    "My strategy wins {p}% of the time. Winners average ${W}; losers average ${L}. What do I make per trade on average, in dollars?",
    "Given a {p}% win probability, an average gain of ${W} and an average loss of ${L}, find EV = p × W - (1 - p) × L in dollars.",
    "Trades win with probability {p}% (+${W}) and otherwise lose ${L}. Expected dollar value per trade?",
])
def _ev(rng):
    p = rng.randint(30, 70)
    W = rng.randrange(100, 1001, 10)
    L = rng.randrange(50, 601, 10)
    gain = round(p / 100 * W, 2)
    loss = round((100 - p) / 100 * L, 2)
    ev = round(gain - loss, 2)
    steps = ["Formula: EV = p × W - (1 - p) × L", f"Substitute: p = {fmt(p / 100)}, W = {W}, L = {L}",
             f"p × W = {fmt(p / 100)} × {W} = {fmt(gain)}",
             f"(1 - p) × L = {fmt((100 - p) / 100)} × {L} = {fmt(loss)}",
             f"EV = {fmt(gain)} - {fmt(loss)} = {fmt(ev)}"]
    return {"p": p, "W": W, "L": L}, steps, ev, "currency"


@family("breakeven_win_rate", [
    "A strategy's average win is {R} times its average loss. What win rate breaks even, in percent?",
    "With a reward-to-risk ratio of {R}:1, what is the breakeven win rate (percent)?",
    "Trades risk $1 to make ${R}. What minimum percentage of winners is needed to break even?",
    "My winners average {R} times my losers. What percentage of trades must win for me to break even?",
    "Reward/risk {R}:1. Break-even probability of a win, in percent?",
    "If each winning trade earns {R} times what a losing trade loses, what win rate (percent) leaves the strategy at zero expected profit?",
    "Payoff ratio {R}: what win rate in percent is breakeven?",
    "Each win pays {R} times the size of each loss. Find the break-even win rate, in percent.",
    "How often, in percent, must a trader win to break even when wins are {R}x the losses?",
    "Calculate the minimum win rate (percent) for zero expectancy with an average win/loss ratio of {R}.",
    "What win percentage makes a system with payoff ratio {R} break even?",
])
def _breakeven(rng):
    R = rng.choice([0.5, 0.8, 1, 1.2, 1.5, 2, 2.5, 3, 4])
    denom = 1 + R
    frac = rounded(1 / denom)
    steps = ["Formula: p = 1 / (1 + R)", f"Substitute: R = {fmt(R)}", f"1 + R = {fmt(denom)}",
             f"p = 1 / {fmt(denom)} = {fmt(frac, 6)} = {fmt(pct(1 / denom))}%"]
    return {"R": fmt(R)}, steps, pct(1 / denom), "percent"


@family("position_size", [
    "An account of ${A} risks {r}% per trade. Entry is ${E} and the stop is ${S}. How many whole shares should be bought?",
    "With ${A} of capital, a {r}% risk limit, a buy at ${E} and a stop-loss at ${S}, what position size in whole shares keeps the risk on target?",
    "Risk {r}% of a ${A} account on a long entered at ${E} with a stop at ${S}. Number of shares (rounded down)?",
    "Account ${A}, risk per trade {r}%, entry ${E}, stop ${S}. Shares to buy (whole number)?",
    "I have ${A} and will risk {r}% on a trade. I buy at ${E} with a stop-loss at ${S}. How many shares, rounded down?",
    "Find the position size in whole shares: capital ${A}, risk {r}%, entry price ${E}, stop price ${S}.",
    "Capital ${A}, risk {r}%, buy ${E}, stop ${S}: whole shares?",
    "Calculate how many whole shares to buy so that a stop at ${S} on an entry at ${E} loses {r}% of a ${A} account.",
    "My account is ${A} and I risk {r}% per trade. I enter at ${E} and set a stop at ${S}. How many shares should I buy (whole number)?",
    "Given A = ${A}, risk r = {r}%, entry ${E} and stop ${S}, find shares = floor(A × r / (Entry - Stop)).",
    "How many shares (whole) can you buy at ${E} with a stop at ${S} if you risk {r}% of ${A}?",
])
def _position(rng):
    A = rng.randrange(10000, 200001, 5000)
    r = rng.choice([0.5, 1, 1.5, 2])
    E = rng.randrange(20, 301)
    S = round(E * (1 - rng.uniform(0.02, 0.1)), 1)
    risk = round(A * r / 100, 2)
    dist = round(E - S, 2)
    shares = math.floor(round(risk / dist, 6))
    steps = ["Formula: shares = floor(A × r / (Entry - Stop))", f"Substitute: A = {A}, r = {fmt(r / 100)}, Entry = {E}, Stop = {S}",
             f"Risk in dollars = {A} × {fmt(r / 100)} = {fmt(risk)}",
             f"Entry - Stop = {E} - {S} = {fmt(dist)}",
             f"{fmt(risk)} / {fmt(dist)} = {fmt(rounded(risk / dist, 4))}, rounded down to {shares}"]
    return {"A": money(A), "r": fmt(r), "E": E, "S": S}, steps, shares, "shares"


@family("capm_expected_return", [
    "A stock has a beta of {beta}. The risk-free rate is {rf}% and the market returns {rm}%. What is its CAPM expected return, in percent?",
    "Using CAPM with Rf = {rf}%, expected market return {rm}% and beta {beta}, compute the expected return in percent.",
    "What return (percent) does CAPM predict for an asset with beta {beta} if T-bills pay {rf}% and the market is expected to earn {rm}%?",
    "Risk-free rate {rf}%, expected market return {rm}%, stock beta {beta}. What expected return (percent) does the capital asset pricing model give?",
    "If the market is expected to return {rm}% and Treasury bills yield {rf}%, what should investors expect from a stock with beta {beta}, per CAPM? Answer in percent.",
    "Find the CAPM cost of equity in percent: beta = {beta}, Rf = {rf}%, Rm = {rm}%.",
    "CAPM: beta {beta}, Rf {rf}%, Rm {rm}%. Expected return in percent?",
    "Calculate the required return on equity (percent) under the capital asset pricing model for beta {beta}, a {rf}% risk-free rate and a {rm}% market return.",
    "A share's beta is {beta}. Treasuries yield {rf}% and the market should earn {rm}%. What does CAPM give as its expected return, in percent?",
    "What is the expected return in percent of a stock with beta {beta}, given E(Rm) = {rm}% and Rf = {rf}%, using CAPM?",
    "Beta {beta}, market return {rm}%, risk-free {rf}%: CAPM required return in percent?",
])
def _capm(rng):
    beta = round(rng.uniform(0.4, 1.8), 2)
    rf = round(rng.uniform(1, 5), 1)
    rm = round(rng.uniform(6, 12), 1)
    prem = round(rm - rf, 1)
    adj = round(beta * prem, 4)
    er = round(rf + adj, 4)
    steps = ["Formula: E(R) = Rf + β × (Rm - Rf)", f"Substitute: Rf = {rf}%, β = {beta}, Rm = {rm}%",
             f"Rm - Rf = {rm} - {rf} = {fmt(prem)}", f"β × (Rm - Rf) = {beta} × {fmt(prem)} = {fmt(adj)}",
             f"E(R) = {rf} + {fmt(adj)} = {fmt(er)}%"]
    return {"beta": beta, "rf": rf, "rm": rm}, steps, er, "percent"


def generate(family_name: str, rng: random.Random, template: int | None = None,
             rewrite: Callable[[str], str] | None = None) -> Problem:
    fam = FAMILIES.get(family_name)
    values, steps, answer, unit = fam.make(rng)
    t = rng.randrange(len(fam.templates)) if template is None else template
    phrasing = fam.templates[t] if rewrite is None else rewrite(fam.templates[t])
    question = phrasing.format(**values)
    return Problem(fam.name, t, question, steps, answer, unit, meta={"values": values})


def generate_set(n: int, seed: int, heldout_template: bool = True, paraphrase: float = 0.0) -> list[Problem]:
    """`n` problems spread evenly over all families, deterministic for `seed`.

    With ``heldout_template`` the last phrasing of each family is never drawn
    here; ``generate_unseen`` uses it. ``paraphrase`` is the fraction of draws
    whose phrasing is rewritten (``paraphrase.rewrite``); the rewrites take their
    own random stream, so the numbers and phrasings drawn are those of
    ``paraphrase=0``.
    """
    from fintune.data.paraphrase import rewrite

    rng = random.Random(seed)
    rewrites = random.Random(f"paraphrase-{seed}")
    names = FAMILIES.names()
    out = []
    for i in range(n):
        fam = FAMILIES.get(names[i % len(names)])
        k = len(fam.templates) - (1 if heldout_template else 0)
        edit = (lambda t: rewrite(t, rewrites)) if rewrites.random() < paraphrase else None
        out.append(generate(fam.name, rng, template=rng.randrange(k), rewrite=edit))
    return out


def generate_unseen(n: int, seed: int) -> list[Problem]:
    """Problems phrased only with each family's reserved (held-out) template."""
    rng = random.Random(seed)
    names = FAMILIES.names()
    return [generate(names[i % len(names)], rng, template=len(FAMILIES.get(names[i % len(names)]).templates) - 1)
            for i in range(n)]


def curriculum_digest(per_family: int = 10) -> str:
    """What the generator writes, as a digest: every family's phrasings, the user
    prompt around a question, and a fixed draw of problems (question, worked
    steps, answer), once as phrased and once rewritten. The data stage's settings
    include it, so a rerun after the curriculum changed regenerates the data
    instead of training on the old rows."""
    import hashlib
    import json

    from fintune.prompts import INSTRUCTIONS, restate_answer, user_prompt

    names = FAMILIES.names()
    # every instruction's prompt and answer line: a profile names one (data.instruction)
    asks = [[user_prompt("?", instruction=i), restate_answer("Final answer: 1", i)] for i in INSTRUCTIONS.names()]
    h = hashlib.sha256(json.dumps([[n, FAMILIES.get(n).templates] for n in names] + asks).encode())
    draws = generate_set(per_family * len(names), seed=0) + generate_unseen(len(names), seed=0)
    from fintune.data.quant_tools import tool_solution

    for p in draws + generate_set(per_family * len(names), seed=0, paraphrase=1.0):
        h.update(json.dumps([p.family, p.question, p.solution(), p.unit]).encode())
    for p in draws:  # the solutions with the calculator too
        h.update(repr(tool_solution(p)).encode())
    return h.hexdigest()[:16]
