"""More quant families: risk-adjusted ratios, VaR/CVaR, discounting, bonds,
options, and compounding a return series. Registered on import (quant.py
imports this module). The last phrasing of each is held out.

Every answer goes formula -> substituted numbers -> one operation per line ->
result; numbers are rounded as they are written, and the next line uses the
rounded value, so each line is checkable on its own.
"""
from __future__ import annotations

import math

from fintune.data.quant_base import family, fmt, money, pct, rounded

Z = {95: 1.6449, 99: 2.3263}          # standard normal quantiles
PDF_Z = {95: 0.10314, 99: 0.02665}    # standard normal density at those quantiles


def ncdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


@family("continuous_compounding", [
    "${P} is invested at {r}% a year compounded continuously. What is it worth after {t} years, in dollars?",
    "With continuous compounding at an annual rate of {r}%, what does ${P} grow to in {t} years (dollars)?",
    "Find the future value in dollars of ${P} after {t} years at {r}% per year, compounded continuously.",
    "How much does ${P} become after {t} years at a continuously compounded rate of {r}%? Answer in dollars.",
    "Principal ${P}, rate {r}% per annum with continuous compounding, time {t} years. Future value in dollars?",
    "Using FV = P e^(rt), find the value in dollars of ${P} after {t} years at {r}%.",
    "Continuous compounding: ${P} at {r}% for {t} years. Future value in dollars?",
    "Calculate the value in dollars of ${P} after {t} years if interest of {r}% a year is compounded continuously.",
    "I put ${P} into an account that compounds continuously at {r}% a year. What will it be worth after {t} years, in dollars?",
    "Given P = ${P}, r = {r}% and t = {t} years, find P e^(rt) in dollars.",
    "A deposit of ${P} earns {r}% continuously compounded. Balance after {t} years, in dollars?",
])
def _continuous(rng):
    P = rng.randrange(1000, 20001, 500)
    r = round(rng.uniform(1, 10), 1)
    t = rng.randint(1, 10)
    rt = rounded(r / 100 * t)
    g = rounded(math.exp(rt))
    fv = round(P * g, 2)
    steps = ["Formula: FV = P × e^(r × t)", f"Substitute: P = {P}, r = {fmt(r / 100)}, t = {t}",
             f"r × t = {fmt(r / 100)} × {t} = {fmt(rt, 6)}", f"e^{fmt(rt, 6)} = {fmt(g, 6)}",
             f"FV = {P} × {fmt(g, 6)} = {fmt(fv)}"]
    return {"P": money(P), "r": fmt(r), "t": t}, steps, fv, "currency"


@family("compound_return_series", [
    "A fund returned {series} in consecutive years. What is its total compounded return, in percent?",
    "Yearly returns were {series}. Compound them: what is the cumulative return in percent?",
    "An investment earned {series} over successive periods. Compute the total return over all periods, in percent.",
    "Returns by year: {series}. What is the total return over the whole period, compounded, in percent?",
    "What is the cumulative compounded return (percent) of a portfolio that gained or lost {series} in successive years?",
    "Compute the compounded total of the returns {series}, in percent.",
    "Period returns {series}: total compounded return in percent?",
    "Calculate the overall return in percent after earning {series} one period after another.",
    "My portfolio made {series} over consecutive years. What is my total return over the whole time, compounded, in percent?",
    "Link the returns {series} geometrically. Total return, in percent?",
    "Chain the period returns {series} into one cumulative return (percent).",
])
def _series(rng):
    rets = [round(rng.uniform(-12, 18), 1) for _ in range(rng.randint(3, 5))]
    steps = ["Formula: total = (1 + r1) × (1 + r2) × ... × (1 + rn) - 1",
             f"Substitute: r = {', '.join(f'{x}%' for x in rets)}"]
    acc = 1.0
    for x in rets:
        new = rounded(acc * (1 + x / 100))
        steps.append(f"{fmt(acc, 6)} × {fmt(1 + x / 100)} = {fmt(new, 6)}")
        acc = new
    total = pct(acc - 1)
    steps.append(f"total = {fmt(acc, 6)} - 1 = {fmt(acc - 1, 6)} = {fmt(total)}%")
    return {"series": ", ".join(f"{x}%" for x in rets), "rets": rets}, steps, total, "percent"


@family("sortino_ratio", [
    "Monthly returns were {series}. With a target return of 0%, what is the Sortino ratio (mean return over downside deviation)?",
    "Compute the Sortino ratio of the returns {series}, using a 0% minimum acceptable return and downside deviation over all periods.",
    "Returns: {series}. Target 0%. Find the Sortino ratio.",
    "Sortino ratio (target 0%) of a strategy whose returns were {series}?",
    "A strategy's monthly returns were {series}. Compute its Sortino ratio, with the downside deviation measured against 0% over every period.",
    "What is the Sortino ratio for returns {series}, with a 0% target?",
    "Returns {series}, MAR 0%: Sortino ratio?",
    "Calculate the Sortino ratio of the period returns {series} against a 0% target, with downside deviation taken over all periods.",
    "My strategy's returns were {series}. Using 0% as the target, what is its Sortino ratio?",
    "Given returns {series}, find mean return / downside deviation (target 0%).",
    "For period returns of {series} and a minimum acceptable return of zero, what is the Sortino ratio?",
])
def _sortino(rng):
    while True:
        rets = [round(rng.uniform(-6, 8), 1) for _ in range(rng.randint(5, 6))]
        if any(x < 0 for x in rets) and sum(rets) > 0:
            break
    n = len(rets)
    mean = rounded(sum(rets) / n, 4)
    sq = [round(x * x, 2) for x in rets if x < 0]
    # six decimals: with one small shortfall (-0.1%) four would put the ratio 1% off
    dvar = rounded(sum(sq) / n, 6)
    dd = rounded(math.sqrt(dvar), 6)
    sortino = round(mean / dd, 4)
    steps = ["Formula: Sortino = (mean - T) / DD, DD = sqrt(sum of min(r - T, 0)^2 / n)",
             f"Substitute: r = {', '.join(map(str, rets))}, T = 0, n = {n}",
             f"mean = {fmt(round(sum(rets), 1))} / {n} = {fmt(mean)}",
             f"squared shortfalls: {', '.join(fmt(x) for x in sq)}",
             f"sum / n = {fmt(round(sum(sq), 2))} / {n} = {fmt(dvar, 6)}",
             f"DD = sqrt({fmt(dvar, 6)}) = {fmt(dd, 6)}", f"Sortino = {fmt(mean)} / {fmt(dd, 6)} = {fmt(sortino)}"]
    return {"series": ", ".join(f"{x}%" for x in rets), "rets": rets}, steps, sortino, "ratio"


@family("treynor_ratio", [
    "A portfolio returned {R}% with a beta of {beta}; the risk-free rate is {rf}%. What is its Treynor ratio (in percent per unit of beta)?",
    "Compute the Treynor ratio: return {R}%, risk-free {rf}%, beta {beta}.",
    "What is the Treynor measure of a fund earning {R}% with beta {beta} when T-bills yield {rf}%?",
    "Find the Treynor ratio (percent per unit of beta) of a portfolio that earned {R}% with beta {beta} when the risk-free rate was {rf}%.",
    "Excess return per unit of systematic risk: return {R}%, risk-free {rf}%, beta {beta}. Treynor ratio?",
    "What Treynor ratio does a manager with {R}% return and beta {beta} have if risk-free assets pay {rf}%?",
    "R {R}%, Rf {rf}%, beta {beta}: Treynor ratio?",
    "Calculate the Treynor ratio (percent per unit of beta) of a fund with a {R}% return and beta {beta}, with a risk-free rate of {rf}%.",
    "My portfolio earned {R}% with a beta of {beta} while risk-free assets paid {rf}%. What is its Treynor ratio?",
    "Given R = {R}%, Rf = {rf}% and β = {beta}, find (R - Rf) / β.",
    "Beta {beta}, portfolio return {R}%, risk-free rate {rf}%: Treynor ratio?",
])
def _treynor(rng):
    R = round(rng.uniform(5, 20), 1)
    rf = round(rng.uniform(1, 4.5), 1)
    beta = round(rng.uniform(0.5, 1.8), 2)
    ex = round(R - rf, 1)
    t = round(ex / beta, 4)
    steps = ["Formula: Treynor = (R - Rf) / β", f"Substitute: R = {R}%, Rf = {rf}%, β = {beta}",
             f"R - Rf = {R} - {rf} = {fmt(ex)}", f"Treynor = {fmt(ex)} / {beta} = {fmt(t)}"]
    return {"R": R, "rf": rf, "beta": beta}, steps, t, "ratio"


@family("information_ratio", [
    "A fund returned {Rp}% against a benchmark's {Rb}%, with a tracking error of {te}%. What is its information ratio?",
    "Portfolio return {Rp}%, benchmark return {Rb}%, tracking error {te}%. Compute the information ratio.",
    "What information ratio does a manager have who beat (or lagged) a {Rb}% benchmark with {Rp}% at {te}% tracking error?",
    "Find the information ratio of a portfolio that earned {Rp}% versus {Rb}% for its benchmark, with {te}% tracking error.",
    "The benchmark made {Rb}% and the fund made {Rp}%. If the tracking error is {te}%, what is the information ratio?",
    "IR for Rp = {Rp}%, Rb = {Rb}%, TE = {te}%?",
    "Fund {Rp}%, benchmark {Rb}%, tracking error {te}%: information ratio?",
    "Calculate the information ratio of a manager who returned {Rp}% while the benchmark returned {Rb}%, with tracking error {te}%.",
    "My portfolio made {Rp}% and its index made {Rb}%, with a {te}% tracking error. What is its information ratio?",
    "Given Rp = {Rp}%, Rb = {Rb}% and tracking error {te}%, find IR = (Rp - Rb) / TE.",
    "Active return over tracking error: fund {Rp}%, index {Rb}%, tracking error {te}%. Information ratio?",
])
def _info(rng):
    Rb = round(rng.uniform(4, 14), 1)
    Rp = round(Rb + rng.uniform(-3, 5), 1)
    te = round(rng.uniform(1, 8), 1)
    act = round(Rp - Rb, 1)
    ir = round(act / te, 4)
    steps = ["Formula: IR = (Rp - Rb) / TE", f"Substitute: Rp = {Rp}%, Rb = {Rb}%, TE = {te}%",
             f"Rp - Rb = {Rp} - {Rb} = {fmt(act)}", f"IR = {fmt(act)} / {te} = {fmt(ir)}"]
    return {"Rp": Rp, "Rb": Rb, "te": te}, steps, ir, "ratio"


@family("beta_from_returns", [
    "A stock returned {a} while the market returned {m} over the same periods. What is the stock's beta?",
    "Paired returns, stock: {a}; market: {m}. Estimate beta as covariance over market variance.",
    "Compute beta from these period returns. Asset: {a}. Market: {m}.",
    "Stock returns by period: {a}. Benchmark returns for the same periods: {m}. Find the beta.",
    "I have an asset's returns ({a}) and the market's ({m}) for matching periods. How sensitive is the asset to the market, measured by beta?",
    "Find the regression beta of the returns {a} against market returns {m}.",
    "Asset returns {a}, market returns {m} over the same periods: beta?",
    "How much does a stock move with the market? Its returns were {a} while the market's were {m}. Give the beta.",
    "Estimate the market beta of a share whose period returns were {a}, given market returns of {m}.",
    "Given stock returns of {a} and index returns of {m}, calculate beta = Cov(a, m) / Var(m).",
    "Over four periods the asset earned {a} and the index {m}. What beta do these returns imply?",
])
def _beta(rng):
    m = [round(rng.uniform(-5, 6), 1) for _ in range(4)]
    true_b = rng.uniform(0.5, 1.8)
    a = [round(true_b * x + rng.uniform(-1.5, 1.5), 1) for x in m]
    mm, ma = rounded(sum(m) / 4, 4), rounded(sum(a) / 4, 4)
    dm = [round(x - mm, 4) for x in m]
    da = [round(x - ma, 4) for x in a]
    cov = round(sum(x * y for x, y in zip(dm, da)), 4)
    var = round(sum(x * x for x in dm), 4)
    beta = round(cov / var, 4)
    steps = ["Formula: β = Σ (a - mean a)(m - mean m) / Σ (m - mean m)^2",
             f"Substitute: a = {', '.join(map(str, a))}; m = {', '.join(map(str, m))}",
             f"mean a = {fmt(ma)}, mean m = {fmt(mm)}",
             f"a deviations: {', '.join(fmt(x) for x in da)}", f"m deviations: {', '.join(fmt(x) for x in dm)}",
             f"Σ products = {fmt(cov)}", f"Σ m deviations squared = {fmt(var)}",
             f"β = {fmt(cov)} / {fmt(var)} = {fmt(beta)}"]
    return {"a": ", ".join(f"{x}%" for x in a), "m": ", ".join(f"{x}%" for x in m),
            "ra": a, "rm": m}, steps, beta, "ratio"


@family("kelly_continuous", [
    "An asset has expected return {mu}% a year and volatility {s}%; cash earns {r}%. What leverage does the continuous Kelly criterion give (fraction of capital)?",
    "Continuous-time Kelly: drift {mu}%, risk-free {r}%, volatility {s}%. Optimal fraction of wealth in the asset?",
    "With μ = {mu}%, r = {r}% and σ = {s}%, compute the Kelly-optimal allocation f* = (μ - r) / σ².",
    "Expected annual return {mu}%, volatility {s}%, risk-free rate {r}%. Continuous Kelly fraction of wealth?",
    "For a strategy with drift {mu}% and annual volatility {s}%, and a risk-free rate of {r}%, what is the Kelly optimal leverage (fraction)?",
    "Find the optimal Kelly allocation as a fraction when μ = {mu}%, σ = {s}% and the risk-free rate is {r}%.",
    "μ {mu}%, σ {s}%, r {r}%: continuous Kelly fraction?",
    "Calculate the continuous-time Kelly leverage for an asset with expected return {mu}%, volatility {s}% and a risk-free rate of {r}%.",
    "My strategy has an expected return of {mu}% a year and {s}% volatility, and cash pays {r}%. How much of my wealth (as a fraction) should I hold by the Kelly rule?",
    "Given drift μ = {mu}%, volatility σ = {s}% and risk-free rate r = {r}%, what is the Kelly-optimal fraction of capital?",
    "What fraction of capital should a Kelly investor hold in a strategy with {mu}% expected return and {s}% volatility when the risk-free rate is {r}%?",
])
def _kelly_cont(rng):
    mu = round(rng.uniform(5, 14), 1)
    r = round(rng.uniform(0.5, 4), 1)
    s = rng.choice([10, 12, 15, 18, 20, 25, 30, 35, 40])
    ex = round((mu - r) / 100, 4)
    var = round((s / 100) ** 2, 4)
    f = round(ex / var, 4)
    steps = ["Formula: f* = (μ - r) / σ²", f"Substitute: μ = {fmt(mu / 100)}, r = {fmt(r / 100)}, σ = {fmt(s / 100)}",
             f"μ - r = {fmt(ex)}", f"σ² = {fmt(s / 100)}² = {fmt(var)}", f"f* = {fmt(ex)} / {fmt(var)} = {fmt(f)}"]
    return {"mu": mu, "r": r, "s": s}, steps, f, "ratio"


@family("parametric_var", [
    "A ${V} portfolio has daily volatility of {s}%. What is its one-day {c}% parametric VaR (zero mean), in dollars?",
    "Compute the 1-day {c}% value at risk in dollars of a ${V} position with {s}% daily standard deviation, assuming normal returns and zero mean.",
    "Normal VaR: position ${V}, daily σ {s}%, confidence {c}%. One-day VaR in dollars?",
    "Portfolio ${V}, daily volatility {s}%, {c}% confidence. One-day value at risk in dollars (normal returns, zero mean)?",
    "What is the one-day {c}% VaR, in dollars, of ${V} invested in an asset with {s}% daily standard deviation? Assume normal returns with mean zero.",
    "Find the 1-day parametric VaR at {c}% confidence for a ${V} portfolio, σ = {s}% per day, mean 0, in dollars.",
    "VaR in dollars? ${V} position, daily σ {s}%, {c}% confidence, normal returns with mean 0.",
    "Calculate the one-day {c}% value at risk, in dollars, of a ${V} portfolio with daily volatility {s}% (normal, zero mean).",
    "My ${V} portfolio has a daily standard deviation of {s}%. What is its one-day VaR at {c}% confidence, in dollars, if returns are normal with zero mean?",
    "Given V = ${V}, σ = {s}% per day and confidence {c}%, find VaR = z × σ × V in dollars.",
    "What one-day loss (dollars) will a ${V} book exceed only {tail}% of the time if daily returns are normal with mean 0 and σ = {s}%?",
])
def _var(rng):
    V = rng.randrange(100_000, 5_000_001, 50_000)
    s = round(rng.uniform(0.5, 3), 2)
    c = rng.choice([95, 99])
    z = Z[c]
    risk = round(V * s / 100, 2)
    var = round(z * risk, 2)
    steps = ["Formula: VaR = z × σ × V", f"Substitute: z({c}%) = {z}, σ = {fmt(s / 100)}, V = {V}",
             f"σ × V = {fmt(s / 100)} × {V} = {fmt(risk)}", f"VaR = {z} × {fmt(risk)} = {fmt(var)}"]
    return {"V": money(V), "s": s, "c": c, "tail": 100 - c}, steps, var, "currency"


@family("parametric_cvar", [
    "A ${V} portfolio has daily volatility {s}%. What is its one-day {c}% expected shortfall (CVaR) under a zero-mean normal, in dollars?",
    "Compute the 1-day {c}% CVaR in dollars for ${V} with {s}% daily standard deviation (normal returns, mean 0).",
    "Normal expected shortfall: position ${V}, daily σ {s}%, confidence {c}%. ES in dollars?",
    "Portfolio value ${V}, daily volatility {s}%, confidence {c}%. Compute the one-day CVaR (expected shortfall) in dollars, assuming normal returns with zero mean.",
    "What is the {c}% one-day expected shortfall in dollars of a ${V} position whose daily returns are normal with mean 0 and standard deviation {s}%?",
    "Expected shortfall at {c}%, 1 day, ${V} exposure, σ = {s}% daily, normal zero-mean returns: ES in dollars?",
    "CVaR in dollars? ${V} position, daily σ {s}%, {c}% confidence, normal returns with mean 0.",
    "Calculate the one-day {c}% conditional value at risk, in dollars, of a ${V} portfolio with daily volatility {s}% (normal, zero mean).",
    "My ${V} portfolio has a daily standard deviation of {s}%. If returns are normal with zero mean, what is its one-day {c}% expected shortfall in dollars?",
    "Given V = ${V}, σ = {s}% per day and confidence {c}%, find the normal expected shortfall ES = σ × V × φ(z) / (1 - c) in dollars.",
    "Average loss beyond the {c}% VaR for a ${V} book with normal daily returns of σ = {s}% and zero mean, in dollars?",
])
def _cvar(rng):
    V = rng.randrange(100_000, 5_000_001, 50_000)
    s = round(rng.uniform(0.5, 3), 2)
    c = rng.choice([95, 99])
    k = round(PDF_Z[c] / (1 - c / 100), 4)
    risk = round(V * s / 100, 2)
    es = round(k * risk, 2)
    steps = ["Formula: ES = σ × V × φ(z) / (1 - c)",
             f"Substitute: z({c}%) = {Z[c]}, φ(z) = {PDF_Z[c]}, 1 - c = {fmt(1 - c / 100)}, σ = {fmt(s / 100)}, V = {V}",
             f"φ(z) / (1 - c) = {PDF_Z[c]} / {fmt(1 - c / 100)} = {fmt(k)}",
             f"σ × V = {fmt(s / 100)} × {V} = {fmt(risk)}", f"ES = {fmt(k)} × {fmt(risk)} = {fmt(es)}"]
    return {"V": money(V), "s": s, "c": c}, steps, es, "currency"


def _discount_lines(flows: list[float], r: float) -> tuple[list[str], float]:
    lines, total = [], 0.0
    for t, cf in enumerate(flows, 1):
        df = rounded(1 / (1 + r) ** t)
        pv = round(cf * df, 2)
        lines.append(f"year {t}: {fmt(cf)} × 1 / (1 + {fmt(r)})^{t} = {fmt(cf)} × {fmt(df, 6)} = {fmt(pv)}")
        total += pv
    return lines, round(total, 2)


@family("npv", [
    "A project costs ${C0} today and returns {flows} at the end of years 1 to {n}. At a {r}% discount rate, what is its NPV in dollars?",
    "Initial investment ${C0}; cash inflows {flows} in years 1-{n}; discount rate {r}%. Compute the NPV (dollars).",
    "What is the net present value in dollars of paying ${C0} now for {flows} over the next {n} years, discounted at {r}%?",
    "Discount rate {r}%, initial cost ${C0}, cash flows {flows} over years 1-{n}. NPV in dollars?",
    "Is it worth paying ${C0} today for {flows} over the next {n} years if money costs {r}%? Give the NPV in dollars.",
    "Compute the net present value (dollars) at {r}%: invest ${C0} now, receive {flows} at the end of each of the next {n} years.",
    "Cost ${C0}, inflows {flows} over years 1 to {n}, rate {r}%: NPV in dollars?",
    "Calculate the net present value in dollars of a project that needs ${C0} today and returns {flows} at the end of each of the next {n} years, at a {r}% discount rate.",
    "I can invest ${C0} now and receive {flows} over {n} years. With a {r}% cost of capital, what is the NPV in dollars?",
    "Given C0 = ${C0}, cash flows {flows} (years 1-{n}) and r = {r}%, find NPV = -C0 + Σ CF_t / (1 + r)^t in dollars.",
    "Discounting at {r}%, find the NPV of an outlay of ${C0} followed by year-end cash flows of {flows}.",
])
def _npv(rng):
    n = rng.randint(3, 4)
    flows = [rng.randrange(2000, 15001, 500) for _ in range(n)]
    C0 = round(sum(flows) * rng.uniform(0.7, 1.05) / 500) * 500
    r = rng.choice([5, 6, 7, 8, 9, 10, 12, 15])
    lines, pv = _discount_lines(flows, r / 100)
    npv = round(pv - C0, 2)
    steps = ["Formula: NPV = -C0 + Σ CF_t / (1 + r)^t",
             f"Substitute: C0 = {C0}, CF = {', '.join(map(str, flows))}, r = {fmt(r / 100)}", *lines,
             f"Σ PV = {fmt(pv)}", f"NPV = {fmt(pv)} - {C0} = {fmt(npv)}"]
    return {"C0": money(C0), "flows": ", ".join(f"${money(f)}" for f in flows), "n": n, "r": r,
            "cf": flows, "c0": C0}, steps, npv, "currency"


def _solve(f, lo: float, hi: float) -> float:
    """Bisection: f(lo) and f(hi) have opposite signs."""
    for _ in range(100):
        mid = (lo + hi) / 2
        if (f(lo) > 0) == (f(mid) > 0):
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _npv_at(c0: float, flows: list[float], r: float) -> float:
    return -c0 + sum(cf / (1 + r) ** t for t, cf in enumerate(flows, 1))


@family("irr", [
    "An investment of ${C0} returns {flows} at the end of years 1 to {n}. What is its internal rate of return, in percent?",
    "Find the IRR (percent) of paying ${C0} now and receiving {flows} over the next {n} years.",
    "Cash flows: -${C0} today, then {flows}. Solve for the IRR in percent.",
    "Outlay ${C0} today; inflows of {flows} at the end of years 1 to {n}. What IRR (percent) does this earn?",
    "What internal rate of return, in percent, does a project have that costs ${C0} and pays {flows} over {n} years?",
    "Compute the internal rate of return in percent: initial cost ${C0}, then cash flows {flows}.",
    "Cost ${C0}, then {flows} over years 1 to {n}: IRR in percent?",
    "Calculate the internal rate of return, in percent, of a project with an upfront cost of ${C0} and year-end inflows of {flows}.",
    "I invest ${C0} today and get back {flows} over the next {n} years. What annual rate of return (IRR) is that, in percent?",
    "Given an initial outlay of ${C0} and cash flows {flows} in years 1-{n}, solve -C0 + Σ CF_t / (1 + r)^t = 0 for r in percent.",
    "What discount rate, in percent, makes the NPV of -${C0} followed by {flows} equal to zero?",
])
def _irr(rng):
    n = rng.randint(3, 4)
    flows = [rng.randrange(2000, 15001, 500) for _ in range(n)]
    C0 = round(sum(flows) * rng.uniform(0.65, 0.95) / 500) * 500
    irr = _solve(lambda r: _npv_at(C0, flows, r), 0.0, 1.0)
    lo, hi = math.floor(irr * 100) / 100, math.floor(irr * 100) / 100 + 0.01
    steps = ["Formula: find r with -C0 + Σ CF_t / (1 + r)^t = 0",
             f"Substitute: C0 = {C0}, CF = {', '.join(map(str, flows))}",
             f"NPV at {fmt(lo * 100)}% = {fmt(round(_npv_at(C0, flows, lo), 2))}",
             f"NPV at {fmt(hi * 100)}% = {fmt(round(_npv_at(C0, flows, hi), 2))}",
             f"the sign changes between them; solving numerically, r = {fmt(pct(irr))}%",
             f"check: NPV at {fmt(pct(irr))}% = {fmt(round(_npv_at(C0, flows, pct(irr) / 100), 2))}"]
    return {"C0": money(C0), "flows": ", ".join(f"${money(f)}" for f in flows), "n": n,
            "cf": flows, "c0": C0}, steps, pct(irr), "percent"


def _bond_lines(F: float, c: float, y: float, n: int) -> tuple[list[str], float, list[float]]:
    coupon = round(F * c, 2)
    flows = [coupon] * (n - 1) + [coupon + F]
    lines, price = _discount_lines(flows, y)
    return lines, price, flows


@family("bond_price", [
    "A {n}-year bond with face value ${F} pays an annual coupon of {c}%. If the yield to maturity is {y}%, what is its price in dollars?",
    "Price a ${F} face, {c}% annual-coupon bond maturing in {n} years at a {y}% yield (dollars).",
    "What should you pay for a bond with {n} years left, a {c}% coupon paid yearly and ${F} par, to earn {y}%? Answer in dollars.",
    "Face ${F}, annual coupon rate {c}%, {n} years to go, market yield {y}%. What is the bond worth in dollars?",
    "How much is a bond worth (dollars) if it pays {c}% of its ${F} face value once a year for {n} years and investors require {y}%?",
    "Discount the cash flows of a {n}-year, {c}% annual coupon bond (face ${F}) at {y}% to find its price in dollars.",
    "How many dollars is a bond worth that has ${F} par, a {c}% coupon once a year and {n} years left, when the required yield is {y}%?",
    "I am looking at a bond: ${F} face, {c}% annual coupon, {n} years to maturity. If the market yield is {y}%, what is it worth in dollars?",
    "Calculate the present value in dollars of a bond paying a {c}% annual coupon on ${F} for {n} years, discounted at a {y}% yield to maturity.",
    "What is the fair price (dollars) of an annual-coupon bond with coupon rate {c}%, face ${F}, {n} years to maturity and YTM {y}%?",
    "Yield {y}%, coupon {c}% (annual), maturity {n} years, par ${F}: bond price in dollars?",
])
def _bond(rng):
    F, n = 1000, rng.randint(2, 5)
    c = rng.choice([2, 3, 4, 5, 6, 7, 8])
    y = round(rng.uniform(2, 9), 1)
    lines, price, flows = _bond_lines(F, c / 100, y / 100, n)
    steps = ["Formula: P = Σ C / (1 + y)^t + F / (1 + y)^n",
             f"Substitute: F = {F}, C = {F} × {fmt(c / 100)} = {fmt(F * c / 100)}, y = {fmt(y / 100)}, n = {n}",
             *lines, f"P = {fmt(price)}"]
    return {"F": money(F), "c": c, "y": fmt(y), "n": n}, steps, price, "currency"


@family("yield_to_maturity", [
    "A {n}-year bond with ${F} face and an annual coupon of {c}% trades at ${P}. What is its yield to maturity, in percent?",
    "Find the YTM (percent) of a ${F} par bond paying {c}% annually, maturing in {n} years, priced at ${P}.",
    "Bond price ${P}, coupon {c}% paid yearly, {n} years to maturity, par ${F}. Solve for the yield in percent.",
    "Price ${P}, par ${F}, annual coupon {c}%, {n} years to maturity. Yield to maturity in percent?",
    "A bond paying {c}% annually on ${F} face matures in {n} years and costs ${P}. What is its YTM, in percent?",
    "Solve for the yield to maturity (percent) of a {n}-year, {c}% annual coupon bond with face value ${F} priced at ${P}.",
    "Price ${P}, face ${F}, coupon {c}% annual, {n} years: YTM in percent?",
    "Calculate the yield to maturity, in percent, of a bond priced at ${P} with ${F} par, a {c}% annual coupon and {n} years to maturity.",
    "I can buy a {n}-year bond with ${F} face and a {c}% annual coupon for ${P}. What yield to maturity would I earn, in percent?",
    "Given price ${P}, par ${F}, coupon rate {c}% (annual) and n = {n} years, solve for the yield y in percent.",
    "What annual yield, in percent, equates ${P} with a {c}% coupon, {n}-year, ${F}-par bond's cash flows?",
])
def _ytm(rng):
    F, n = 1000, rng.randint(2, 5)
    c = rng.choice([2, 3, 4, 5, 6, 7, 8])
    coupon = F * c / 100
    flows = [coupon] * (n - 1) + [coupon + F]
    # a market yield first, so the quoted price is a realistic one
    P = round(_npv_at(0, flows, rng.uniform(0.02, 0.09)), 2)
    ytm = _solve(lambda y: _npv_at(P, flows, y), -0.05, 0.5)
    lo = math.floor(ytm * 100) / 100
    steps = ["Formula: find y with Σ C / (1 + y)^t + F / (1 + y)^n = P",
             f"Substitute: P = {fmt(P)}, C = {fmt(coupon)}, F = {F}, n = {n}",
             f"price at {fmt(lo * 100)}% = {fmt(round(_npv_at(0, flows, lo), 2))}",
             f"price at {fmt((lo + 0.01) * 100)}% = {fmt(round(_npv_at(0, flows, lo + 0.01), 2))}",
             f"{fmt(P)} lies between them; solving numerically, y = {fmt(pct(ytm))}%"]
    return {"F": money(F), "c": c, "P": money(P), "n": n, "p": P}, steps, pct(ytm), "percent"


@family("macaulay_duration", [
    "What is the Macaulay duration, in years, of a {n}-year ${F} bond with a {c}% annual coupon at a {y}% yield?",
    "Compute the Macaulay duration (years): par ${F}, {c}% annual coupon, {n} years to maturity, yield {y}%.",
    "A {c}% annual-pay bond matures in {n} years and yields {y}%; face ${F}. Find its Macaulay duration in years.",
    "Find the Macaulay duration in years of a bond with face ${F}, a {c}% coupon paid annually, {n} years to go and a {y}% yield to maturity.",
    "How long, in years, is the Macaulay duration of a ${F} par, {n}-year bond paying {c}% once a year when yields are {y}%?",
    "Bond: par ${F}, annual coupon {c}%, term {n} years, YTM {y}%. Macaulay duration (years)?",
    "Duration (Macaulay, years) of a bond that pays {c}% on ${F} each year for {n} years when the market yield is {y}%?",
    "Calculate the Macaulay duration, in years, of a ${F} bond that pays a {c}% coupon once a year for {n} years and yields {y}%.",
    "I own a {n}-year bond with ${F} par paying {c}% annually. At a {y}% yield, what is its Macaulay duration in years?",
    "Given F = ${F}, coupon rate {c}% (annual), n = {n} years and y = {y}%, find the weighted-average time to cash flows D = Σ t × PV_t / P, in years.",
    "Yield {y}%, coupon {c}% yearly, {n}-year maturity, ${F} face: Macaulay duration in years?",
])
def _macaulay(rng):
    F, n = 1000, rng.randint(2, 5)
    c = rng.choice([2, 3, 4, 5, 6, 7, 8])
    y = round(rng.uniform(2, 9), 1)
    lines, price, flows = _bond_lines(F, c / 100, y / 100, n)
    pvs = [round(cf * rounded(1 / (1 + y / 100) ** t), 2) for t, cf in enumerate(flows, 1)]
    weighted = round(sum(t * pv for t, pv in enumerate(pvs, 1)), 2)
    d = round(weighted / price, 4)
    steps = ["Formula: D = Σ t × PV_t / P",
             f"Substitute: C = {fmt(F * c / 100)}, F = {F}, y = {fmt(y / 100)}, n = {n}", *lines,
             f"P = {fmt(price)}", "t × PV_t: " + ", ".join(f"{t} × {fmt(pv)}" for t, pv in enumerate(pvs, 1)),
             f"Σ t × PV_t = {fmt(weighted)}", f"D = {fmt(weighted)} / {fmt(price)} = {fmt(d)}"]
    return {"F": money(F), "c": c, "y": fmt(y), "n": n}, steps, d, "years"


@family("modified_duration", [
    "A bond has a Macaulay duration of {D} years and a yield of {y}% (annual compounding). What is its modified duration?",
    "Convert a Macaulay duration of {D} years into modified duration at a {y}% annual yield.",
    "Macaulay duration {D}, yield to maturity {y}% compounded annually. Modified duration in years?",
    "Macaulay duration = {D} years, annual yield = {y}%. Find the modified duration.",
    "A bond's yield is {y}% with annual compounding and its Macaulay duration {D} years. Compute the modified duration.",
    "Modified duration from D_mac = {D} and y = {y}% (annual)?",
    "Macaulay {D} years, yield {y}%: modified duration?",
    "Calculate the modified duration of a bond with a {D}-year Macaulay duration and a {y}% yield, compounded annually.",
    "My bond's Macaulay duration is {D} years and it yields {y}% a year. What is its modified duration?",
    "Given D = {D} years and y = {y}% with annual compounding, find D / (1 + y).",
    "What is the modified duration of a bond yielding {y}% whose Macaulay duration is {D} years?",
])
def _modified(rng):
    D = round(rng.uniform(1.5, 12), 2)
    y = round(rng.uniform(1, 9), 1)
    g = round(1 + y / 100, 4)
    md = round(D / g, 4)
    steps = ["Formula: D_mod = D_mac / (1 + y)", f"Substitute: D_mac = {D}, y = {fmt(y / 100)}",
             f"1 + y = {fmt(g)}", f"D_mod = {D} / {fmt(g)} = {fmt(md)}"]
    return {"D": D, "y": fmt(y)}, steps, md, "years"


def _bs_lines(S, K, r, s, T):
    sq = rounded(s * math.sqrt(T))
    ln = rounded(math.log(S / K))
    num = rounded(ln + (r + s * s / 2) * T)
    # 5 decimals: an option worth a few dollars on a $200 stock needs them
    d1 = round(num / sq, 5)
    d2 = round(d1 - sq, 5)
    disc = rounded(K * math.exp(-r * T), 4)
    lines = [f"ln(S/K) = ln({fmt(S)}/{fmt(K)}) = {fmt(ln, 6)}",
             f"(r + σ²/2) × T = ({fmt(r)} + {fmt(s * s / 2, 6)}) × {fmt(T)} = {fmt((r + s * s / 2) * T, 6)}",
             f"σ × sqrt(T) = {fmt(sq, 6)}", f"d1 = {fmt(num, 6)} / {fmt(sq, 6)} = {fmt(d1, 5)}",
             f"d2 = {fmt(d1, 5)} - {fmt(sq, 6)} = {fmt(d2, 5)}", f"K × e^(-rT) = {fmt(disc)}"]
    return lines, d1, d2, disc


_BS_TEMPLATES = [
    "Stock price ${S}, strike ${K}, {T} years to expiry, risk-free rate {r}%, volatility {s}%. What is the Black-Scholes {kind} price, in dollars?",
    "Use Black-Scholes to price a European {kind}: S = ${S}, K = ${K}, T = {T} years, r = {r}%, σ = {s}%. Answer in dollars.",
    "What is a European {kind} worth (dollars) on a non-dividend stock at ${S} with strike ${K}, {T} years left, {s}% volatility and a {r}% rate?",
    "S = ${S}, K = ${K}, r = {r}%, σ = {s}%, T = {T} years. Find the Black-Scholes price of the {kind} option in dollars.",
    "A {kind} option expires in {T} years. The underlying trades at ${S}, the strike is ${K}, annual volatility is {s}% and the risk-free rate is {r}%. Price it with Black-Scholes, in dollars.",
    "I want the fair value (dollars) of a European {kind}: share price ${S}, exercise price ${K}, time left {T} years, interest rate {r}%, sigma {s}%. Use the Black-Scholes model.",
    "European {kind} premium in dollars under Black-Scholes: underlying at ${S}, exercise price ${K}, expiry in {T} years, interest {r}%, sigma {s}%.",
    "Calculate the value in dollars of a European {kind} option: the stock is at ${S}, the strike is ${K}, it expires in {T} years, σ is {s}% and r is {r}%.",
    "What does Black-Scholes say a {kind} is worth (dollars) with underlying ${S}, exercise ${K}, {T} years to maturity, risk-free rate {r}%, volatility {s}%?",
    "Given S = ${S}, K = ${K}, T = {T}, r = {r}% and σ = {s}%, compute the European {kind} premium in dollars using Black-Scholes.",
    "Black-Scholes {kind} value in dollars: spot {S}, strike {K}, maturity {T} years, rate {r}%, vol {s}%?",
]


def _bs_inputs(rng):
    S = rng.randrange(40, 201)
    K = round(S * rng.choice([0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15]))
    T = rng.choice([0.25, 0.5, 0.75, 1.0, 1.5, 2.0])
    r = round(rng.uniform(1, 6), 1)
    s = rng.choice([15, 20, 25, 30, 35, 40, 50])
    return S, K, T, r, s


@family("black_scholes_call", [t.replace("{kind}", "call") for t in _BS_TEMPLATES])
def _bs_call(rng):
    S, K, T, r, s = _bs_inputs(rng)
    lines, d1, d2, disc = _bs_lines(S, K, r / 100, s / 100, T)
    n1, n2 = round(ncdf(d1), 5), round(ncdf(d2), 5)
    c = round(S * n1 - disc * n2, 2)
    steps = ["Formula: C = S × N(d1) - K × e^(-rT) × N(d2), d1 = (ln(S/K) + (r + σ²/2)T) / (σ sqrt(T)), d2 = d1 - σ sqrt(T)",
             f"Substitute: S = {S}, K = {K}, T = {fmt(T)}, r = {fmt(r / 100)}, σ = {fmt(s / 100)}", *lines,
             f"N(d1) = {fmt(n1, 5)}, N(d2) = {fmt(n2, 5)}",
             f"C = {S} × {fmt(n1, 5)} - {fmt(disc)} × {fmt(n2, 5)} = {fmt(c)}"]
    return {"S": S, "K": K, "T": fmt(T), "r": fmt(r), "s": s}, steps, c, "currency"


@family("black_scholes_put", [t.replace("{kind}", "put") for t in _BS_TEMPLATES])
def _bs_put(rng):
    S, K, T, r, s = _bs_inputs(rng)
    lines, d1, d2, disc = _bs_lines(S, K, r / 100, s / 100, T)
    n1, n2 = round(ncdf(-d1), 5), round(ncdf(-d2), 5)
    p = round(disc * n2 - S * n1, 2)
    steps = ["Formula: P = K × e^(-rT) × N(-d2) - S × N(-d1), d1 = (ln(S/K) + (r + σ²/2)T) / (σ sqrt(T)), d2 = d1 - σ sqrt(T)",
             f"Substitute: S = {S}, K = {K}, T = {fmt(T)}, r = {fmt(r / 100)}, σ = {fmt(s / 100)}", *lines,
             f"N(-d1) = {fmt(n1, 5)}, N(-d2) = {fmt(n2, 5)}",
             f"P = {fmt(disc)} × {fmt(n2, 5)} - {S} × {fmt(n1, 5)} = {fmt(p)}"]
    return {"S": S, "K": K, "T": fmt(T), "r": fmt(r), "s": s}, steps, p, "currency"


@family("put_call_parity", [
    "A European call with strike ${K} and {T} years to expiry costs ${C}; the stock is at ${S} and the risk-free rate is {r}% (continuous). What should the put with the same strike and expiry cost, in dollars?",
    "By put-call parity, find the European put price in dollars: call ${C}, spot ${S}, strike ${K}, T = {T} years, r = {r}% continuously compounded.",
    "Call ${C}, stock ${S}, strike ${K}, {T} years, rate {r}%: what put price (dollars) rules out arbitrage?",
    "Call price ${C}, stock price ${S}, strike ${K}, time to expiry {T} years, continuous risk-free rate {r}%. Use put-call parity to find the European put price in dollars.",
    "What is the no-arbitrage price in dollars of a European put if the matching call costs ${C}, the stock trades at ${S}, the strike is ${K}, expiry is {T} years away and the continuously compounded rate is {r}%?",
    "Given a European call at ${C} on a ${S} stock (strike ${K}, expiry {T} years, rate {r}% continuous), what must the put with the same terms cost in dollars?",
    "Put price in dollars by put-call parity? Call ${C}, spot ${S}, strike ${K}, T {T} years, r {r}% continuous.",
    "Calculate the European put value in dollars from put-call parity when the call is ${C}, the stock ${S}, the strike ${K}, the expiry {T} years and the continuously compounded rate {r}%.",
    "I see a European call at ${C} on a stock trading at ${S}, strike ${K}, {T} years to expiry, rate {r}% (continuous). What should the matching put cost, in dollars?",
    "A call sells for ${C}; the share is at ${S}; strike ${K}; {T} years to go; {r}% continuous interest. Put value in dollars from parity?",
    "Using C - P = S - K e^(-rT), with C = ${C}, S = ${S}, K = ${K}, r = {r}%, T = {T} years, compute P in dollars.",
])
def _parity(rng):
    S, K, T, r, s = _bs_inputs(rng)
    _, d1, d2, disc = _bs_lines(S, K, r / 100, s / 100, T)
    C = round(S * ncdf(d1) - disc * ncdf(d2), 2)
    diff = round(S - disc, 4)
    P = round(C - diff, 2)
    steps = ["Formula: P = C - S + K × e^(-rT)", f"Substitute: C = {C}, S = {S}, K = {K}, r = {fmt(r / 100)}, T = {fmt(T)}",
             f"r × T = {fmt(r / 100 * T, 6)}", f"K × e^(-rT) = {K} × {fmt(math.exp(-r / 100 * T), 6)} = {fmt(disc)}",
             f"S - K × e^(-rT) = {S} - {fmt(disc)} = {fmt(diff)}", f"P = {fmt(C)} - {fmt(diff)} = {fmt(P)}"]
    return {"S": S, "K": K, "T": fmt(T), "r": fmt(r), "C": fmt(C)}, steps, P, "currency"
