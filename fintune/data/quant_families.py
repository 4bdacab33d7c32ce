"""More quant families: risk-adjusted ratios, beta, Kelly, VaR/CVaR and
compounding (continuous, a return series); discounting, bonds and options are in
quant_pricing.py. Registered on import (quant.py imports both modules). The last
phrasing of each is held out.

Every answer goes formula -> substituted numbers -> one operation per line ->
result; numbers are rounded as they are written, and the next line uses the
rounded value, so each line is checkable on its own.
"""
from __future__ import annotations

import math

from fintune.data.quant_base import family, fmt, money, pct, rounded

Z = {95: 1.6449, 99: 2.3263}          # standard normal quantiles
PDF_Z = {95: 0.10314, 99: 0.02665}    # standard normal density at those quantiles


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
