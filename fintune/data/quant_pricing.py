"""Quant families that price cash flows: NPV and IRR, bond price, yield and
duration, Black-Scholes and put-call parity. Registered on import (quant.py
imports this module after quant_families.py, so the families keep their order).
The last phrasing of each is held out.

Every answer goes formula -> substituted numbers -> one operation per line ->
result; numbers are rounded as they are written, and the next line uses the
rounded value, so each line is checkable on its own.
"""
from __future__ import annotations

import math

from fintune.data.quant_base import family, fmt, money, pct, rounded


def ncdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


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
