"""Market-data questions on a CSV the test writes (numbers checked with pandas),
and instruction corpora through datasets.load_dataset (local copy; offline hub)."""
import json
import logging
import math

import numpy as np
import pandas as pd
import pytest

from fintune.config import build_config
from fintune.data import market
from fintune.jsonl import DataError


@pytest.fixture
def prices_csv(tmp_path):
    rng = np.random.default_rng(0)
    dates = pd.bdate_range("2024-01-01", periods=120)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.015, len(dates))))
    df = pd.DataFrame({"Date": dates.strftime("%Y-%m-%d"), "Open": close, "High": close * 1.01,
                       "Low": close * 0.99, "Close": close.round(2), "Volume": 1000})
    path = tmp_path / "acme.csv"
    df.to_csv(path, index=False)
    other = df.assign(Close=(df.Close * np.linspace(1, 1.3, len(df))).round(2))
    other.to_csv(tmp_path / "bolt.csv", index=False)
    return path, tmp_path / "bolt.csv"


def test_market_answers_match_pandas(prices_csv):
    a, b = prices_csv
    series = market.load_series([str(a), str(b)], [], optional=False)
    problems = market.generate(series, 60, seed=1)
    assert {p.family for p in problems} == {"market_return", "market_volatility", "market_volatility_annual",
                                            "market_max_drawdown", "market_ma_trend", "market_compare"}
    for p in problems:
        closes = pd.Series(p.meta.get("closes", []), dtype=float)
        if p.family == "market_return":
            want = 100 * (closes.iloc[1] / closes.iloc[0] - 1)
        elif p.family == "market_volatility":
            want = 100 * closes.pct_change().dropna().std()
        elif p.family == "market_volatility_annual":
            want = 100 * closes.pct_change().dropna().std() * math.sqrt(252)
        elif p.family == "market_max_drawdown":
            want = 100 * ((closes.cummax() - closes) / closes.cummax()).max()
        elif p.family == "market_ma_trend":
            want = 100 * (closes.iloc[-1] / closes.mean() - 1)
        else:
            continue  # compare: difference of two returns computed like market_return
        assert p.answer == pytest.approx(want, rel=2e-3, abs=0.01), p.solution()
        assert p.solution().endswith(f"Final answer: {market.fmt(p.answer)}")


def test_ohlcv_csv_missing_columns_is_named(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("Date,Close\n2024-01-02,10\n")
    with pytest.raises(DataError, match=r"bad.csv: missing column\(s\) Open, High, Low, Volume"):
        market.load_csv(bad)


def test_unreachable_ticker_is_one_line_when_optional(caplog):
    with caplog.at_level(logging.WARNING):
        assert market.load_series([], ["ZZZZ-NOT-A-TICKER"], optional=True) == {}
    assert "continuing without it" in caplog.text
    with pytest.raises(DataError):
        market.load_series([], ["ZZZZ-NOT-A-TICKER"], optional=False)


def test_data_stage_with_market_and_a_local_hub_copy(tmp_path, prices_csv, caplog):
    from fintune import data

    corpus = tmp_path / "investopedia.csv"
    pd.DataFrame({"Question": ["What is a bond ladder?", "What is EBITDA?"],
                  "Answer": ["A portfolio of bonds with staggered maturities.", "Earnings before interest ..."],
                  "Context": ["", "Income statement"]}).to_csv(corpus, index=False)
    cfg = build_config(overrides={
        "dataset_folder": str(tmp_path / "none"), "data_dir": str(tmp_path / "out"), "num_generated": 10,
        "contamination_files": "", "market_files": f"{prices_csv[0]},{prices_csv[1]}", "market_samples": 40,
        "hub_datasets": f"{corpus},FinLang/investopedia-instruction-tuning-dataset", "token_check": False})
    with caplog.at_level(logging.WARNING):
        out = data.run(cfg)
    assert "could not load FinLang/investopedia-instruction-tuning-dataset" in caplog.text
    stats = json.loads((out / "stats.json").read_text())
    assert stats["counts"]["kept:generator:market"] == 36 and stats["counts"][f"kept:hub:{corpus}"] == 2
    rows = [json.loads(l) for l in (out / "train.jsonl").read_text().splitlines()]
    hub = [r for r in rows if r["source"].startswith("hub:")]
    assert hub[1]["messages"][0]["content"] == "What is EBITDA?\n\nContext:\nIncome statement"
    held = [json.loads(l) for l in (out / "heldout.jsonl").read_text().splitlines()]
    assert sum(h["source"] == "generator:market" for h in held) == 4


def test_unreachable_hub_source_fails_when_not_optional(tmp_path):
    from fintune import data

    cfg = build_config(overrides={
        "dataset_folder": str(tmp_path / "none"), "data_dir": str(tmp_path / "out"), "num_generated": 10,
        "contamination_files": "", "token_check": False, "hub_optional": False,
        "hub_datasets": "FinLang/investopedia-instruction-tuning-dataset"})
    with pytest.raises(DataError, match="hub_optional"):
        data.run(cfg)
