"""Market-data questions from OHLCV price history: a CSV (Date, Open, High,
Low, Close, Volume) or yfinance when asked and the network allows.

Numbers are computed with pandas on the closes; the answer shows the formula,
the prices used and each step, and ends with ``Final answer: <number>``.
"""
from __future__ import annotations

import logging
import math
import random
from pathlib import Path

from fintune.data.quant_base import Problem, fmt, pct
from fintune.jsonl import DataError

log = logging.getLogger(__name__)
COLUMNS = ("Date", "Open", "High", "Low", "Close", "Volume")


def load_csv(path: str | Path):
    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_csv(path)
    except Exception as e:  # pandas' parser raises many types (ParserError, ValueError, OSError, ...)
        raise DataError(f"{path}: cannot read OHLCV CSV ({type(e).__name__}: {str(e).strip()[:200]})") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; an OHLCV CSV needs {', '.join(COLUMNS)}")
    df["Date"] = pd.to_datetime(df["Date"], errors="coerce")
    bad = df[df["Date"].isna() | pd.to_numeric(df["Close"], errors="coerce").isna()]
    if len(bad):
        row = int(bad.index[0]) + 2  # the header is line 1
        raise DataError(f"{path}:{row}: field Date or Close is not a date / number")
    df["Close"] = df["Close"].astype(float)
    return df.sort_values("Date").reset_index(drop=True)


def load_ticker(ticker: str, period: str = "2y"):
    """Daily history from yfinance; raises DataError with one clear line when it cannot."""
    try:
        import yfinance as yf
    except ImportError:
        raise DataError(f"yfinance is not installed; cannot fetch {ticker} (pip install yfinance, "
                        "or pass the prices as a CSV with data.market_files)") from None
    try:
        df = yf.Ticker(ticker).history(period=period, auto_adjust=True)
    except Exception as e:  # network errors come in many types
        raise DataError(f"could not fetch {ticker} from yfinance ({type(e).__name__}: {e})") from None
    if df is None or df.empty:
        raise DataError(f"could not fetch {ticker} from yfinance (no data returned; offline?)")
    return df.reset_index().rename(columns={"index": "Date"})[list(COLUMNS)]


def _d(ts) -> str:
    return ts.strftime("%Y-%m-%d")


def period_return(name, df, rng) -> Problem:
    n = rng.choice([5, 10, 20, 60])
    end = rng.randrange(n, len(df))
    a, b = df.Close[end - n], df.Close[end]
    ratio = round(b / a, 6)
    ret = pct(ratio - 1)
    q = f"{name} closed at {fmt(a)} on {_d(df.Date[end - n])} and at {fmt(b)} on {_d(df.Date[end])}, {n} trading days later. What was the return over those {n} days, in percent?"
    steps = ["Formula: return = Close_end / Close_start - 1", f"Substitute: Close_start = {fmt(a)}, Close_end = {fmt(b)}",
             f"{fmt(b)} / {fmt(a)} = {fmt(ratio, 6)}", f"return = {fmt(ratio, 6)} - 1 = {fmt(ret)}%"]
    return Problem("market_return", 0, q, steps, ret, "percent", {"closes": [a, b]})


def _window(df, rng, n):
    end = rng.randrange(n, len(df))
    return df.iloc[end - n:end + 1]


def volatility(name, df, rng, annualize: bool) -> Problem:
    w = _window(df, rng, rng.choice([5, 6]))
    closes = [round(c, 2) for c in w.Close]
    rets = [round(closes[i] / closes[i - 1] - 1, 6) for i in range(1, len(closes))]
    mean = sum(rets) / len(rets)
    var = sum((r - mean) ** 2 for r in rets) / (len(rets) - 1)
    sd = round(math.sqrt(var), 6)
    ans = pct(sd * math.sqrt(252)) if annualize else pct(sd)
    what = "annualized volatility (252 trading days)" if annualize else "realized daily volatility (sample standard deviation of daily returns)"
    q = f"{name} daily closes were {', '.join(fmt(c) for c in closes)}. What is the {what}, in percent?"
    steps = ["Formula: σ = sample standard deviation of r_t = Close_t / Close_(t-1) - 1"
             + (", σ_annual = σ × sqrt(252)" if annualize else ""),
             f"Substitute: closes = {', '.join(fmt(c) for c in closes)}",
             f"daily returns: {', '.join(fmt(r, 6) for r in rets)}", f"mean = {fmt(mean, 6)}",
             f"variance = {fmt(var, 8)}", f"σ = {fmt(sd, 6)}"]
    if annualize:
        steps.append(f"σ_annual = {fmt(sd, 6)} × {fmt(math.sqrt(252))} = {fmt(ans)}%")
    else:
        steps.append(f"σ = {fmt(ans)}%")
    return Problem("market_volatility_annual" if annualize else "market_volatility", 0, q, steps, ans, "percent",
                   {"closes": closes})


def max_drawdown(name, df, rng) -> Problem:
    closes = [round(c, 2) for c in _window(df, rng, rng.choice([6, 8])).Close]
    peak, worst, steps = closes[0], 0.0, []
    for c in closes:
        peak = max(peak, c)
        dd = round((peak - c) / peak, 6)
        worst = max(worst, dd)
        steps.append(f"close {fmt(c)}: peak {fmt(peak)}, drawdown {fmt(dd, 6)}")
    ans = pct(worst)
    q = f"{name} closed at {', '.join(fmt(c) for c in closes)} on consecutive days. What was the maximum drawdown, in percent?"
    return Problem("market_max_drawdown", 0, q, ["Formula: MDD = max over t of (running peak - Close_t) / running peak",
                                                 f"Substitute: closes = {', '.join(fmt(c) for c in closes)}", *steps,
                                                 f"MDD = {fmt(worst, 6)} = {fmt(ans)}%"], ans, "percent",
                   {"closes": closes})


def ma_trend(name, df, rng) -> Problem:
    n = 5
    closes = [round(c, 2) for c in _window(df, rng, n - 1).Close]
    sma = round(sum(closes) / n, 4)
    gap = pct(closes[-1] / sma - 1)
    q = (f"{name}'s last {n} closes were {', '.join(fmt(c) for c in closes)}. By how many percent is the latest close "
         f"above (positive) or below (negative) its {n}-day simple moving average?")
    steps = [f"Formula: gap = Close_last / SMA{n} - 1", f"Substitute: closes = {', '.join(fmt(c) for c in closes)}",
             f"SMA{n} = {fmt(round(sum(closes), 2))} / {n} = {fmt(sma)}",
             f"gap = {fmt(closes[-1])} / {fmt(sma)} - 1 = {fmt(gap)}% "
             f"({'above: uptrend' if gap > 0 else 'below: downtrend'})"]
    return Problem("market_ma_trend", 0, q, steps, gap, "percent", {"closes": closes})


def compare(name_a, df_a, name_b, df_b, rng) -> Problem:
    n = rng.choice([5, 10, 20])
    k = min(len(df_a), len(df_b))
    end = rng.randrange(n, k)
    ra = pct(df_a.Close[end] / df_a.Close[end - n] - 1)
    rb = pct(df_b.Close[end] / df_b.Close[end - n] - 1)
    diff = round(ra - rb, 2)
    q = (f"Over the same {n} trading days {name_a} went from {fmt(df_a.Close[end - n])} to {fmt(df_a.Close[end])} and "
         f"{name_b} from {fmt(df_b.Close[end - n])} to {fmt(df_b.Close[end])}. By how many percentage points did "
         f"{name_a}'s return beat {name_b}'s (negative if it lagged)?")
    steps = ["Formula: difference = return_A - return_B, return = Close_end / Close_start - 1",
             f"return {name_a} = {fmt(df_a.Close[end])} / {fmt(df_a.Close[end - n])} - 1 = {fmt(ra)}%",
             f"return {name_b} = {fmt(df_b.Close[end])} / {fmt(df_b.Close[end - n])} - 1 = {fmt(rb)}%",
             f"difference = {fmt(ra)} - {fmt(rb)} = {fmt(diff)}"]
    return Problem("market_compare", 0, q, steps, diff, "percentage points", {})


def generate(series: dict[str, "object"], n: int, seed: int) -> list[Problem]:
    """`n` questions over the loaded price histories, deterministic for `seed`."""
    rng = random.Random(seed)
    names = sorted(series)
    usable = [s for s in names if len(series[s]) >= 61]
    if not usable:
        raise DataError("market data needs at least 61 daily closes per ticker")
    makers = ["return", "vol", "vol_annual", "mdd", "trend"] + (["compare"] if len(usable) > 1 else [])
    out = []
    for i in range(n):
        kind, name = makers[i % len(makers)], rng.choice(usable)
        df = series[name]
        if kind == "return":
            out.append(period_return(name, df, rng))
        elif kind in ("vol", "vol_annual"):
            out.append(volatility(name, df, rng, kind == "vol_annual"))
        elif kind == "mdd":
            out.append(max_drawdown(name, df, rng))
        elif kind == "trend":
            out.append(ma_trend(name, df, rng))
        else:
            other = rng.choice([u for u in usable if u != name])
            out.append(compare(name, df, other, series[other], rng))
    return out


def load_series(files: list[str], tickers: list[str], optional: bool) -> dict:
    series = {}
    for f in files:
        series[Path(f).stem.upper()] = load_csv(f)
    for t in tickers:
        try:
            series[t.upper()] = load_ticker(t)
        except DataError as e:
            if not optional:
                raise
            log.warning("data: %s; continuing without it (market data marked optional)", e)
    return series
