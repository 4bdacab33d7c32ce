"""Every generator family's gold answer against an independent computation."""
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest

from fintune.data import quant


def numbers(text):
    return [float(x.replace(",", "")) for x in re.findall(r"-?\d[\d,]*\.?\d*", text)]


def independent(p: quant.Problem) -> float:
    v = p.meta["values"]
    f = p.family
    if f == "compound_interest":
        P = float(v["P"].replace(",", ""))
        return P * (1 + v["r"] / 100) ** v["n"]
    if f == "cagr":
        A, B = (float(v[k].replace(",", "")) for k in ("A", "B"))
        return 100 * ((B / A) ** (1 / v["n"]) - 1)
    if f == "drawdown":
        peak, trough = (float(v[k].replace(",", "")) for k in ("peak", "trough"))
        return 100 * (peak - trough) / peak
    if f == "max_drawdown":
        prices = np.array([float(x) for x in v["series"].split(",")])
        running = np.maximum.accumulate(prices)
        return 100 * float(np.max((running - prices) / running))
    if f == "sharpe_ratio":
        return (v["R"] - v["rf"]) / v["s"]
    if f == "volatility_annualization":
        return v["v"] * math.sqrt(v["N"])
    if f == "kelly_binary":
        b, p_ = float(v["b"]), v["p"] / 100
        return 100 * (p_ - (1 - p_) / b)
    if f == "expected_value_trade":
        return v["p"] / 100 * v["W"] - (1 - v["p"] / 100) * v["L"]
    if f == "breakeven_win_rate":
        return 100 / (1 + float(v["R"]))
    if f == "position_size":
        A = float(v["A"].replace(",", ""))
        return math.floor(A * float(v["r"]) / 100 / (v["E"] - v["S"]) + 1e-9)
    if f == "capm_expected_return":
        return v["rf"] + v["beta"] * (v["rm"] - v["rf"])
    more = MORE.get(f)
    if more:
        return more(v)
    raise AssertionError(f"no independent computation for family {f}")


def _num(x) -> float:
    return float(str(x).replace(",", ""))


def _bs(v, kind):
    from scipy.stats import norm

    S, K, T, r, s = v["S"], v["K"], _num(v["T"]), _num(v["r"]) / 100, v["s"] / 100
    d1 = (math.log(S / K) + (r + s * s / 2) * T) / (s * math.sqrt(T))
    d2 = d1 - s * math.sqrt(T)
    if kind == "call":
        return S * norm.cdf(d1) - K * math.exp(-r * T) * norm.cdf(d2)
    return K * math.exp(-r * T) * norm.cdf(-d2) - S * norm.cdf(-d1)


def _bond_price(F, c, y, n):
    t = np.arange(1, n + 1)
    flows = np.full(n, F * c)
    flows[-1] += F
    return float(np.sum(flows / (1 + y) ** t)), flows, t


def _irr(c0, flows):
    from scipy.optimize import brentq

    return brentq(lambda r: -c0 + sum(cf / (1 + r) ** t for t, cf in enumerate(flows, 1)), -0.9, 5)


def _macaulay(v):
    y = _num(v["y"]) / 100
    price, flows, t = _bond_price(1000, v["c"] / 100, y, v["n"])
    return float(np.sum(t * flows / (1 + y) ** t)) / price


def _es(v):
    from scipy.stats import norm

    c = v["c"] / 100
    return _num(v["V"]) * v["s"] / 100 * norm.pdf(norm.ppf(c)) / (1 - c)


MORE = {
    "continuous_compounding": lambda v: _num(v["P"]) * math.exp(_num(v["r"]) / 100 * v["t"]),
    "compound_return_series": lambda v: 100 * (np.prod([1 + x / 100 for x in v["rets"]]) - 1),
    "sortino_ratio": lambda v: np.mean(v["rets"]) / math.sqrt(np.mean(np.minimum(v["rets"], 0) ** 2)),
    "treynor_ratio": lambda v: (v["R"] - v["rf"]) / v["beta"],
    "information_ratio": lambda v: (v["Rp"] - v["Rb"]) / v["te"],
    "beta_from_returns": lambda v: np.cov(v["ra"], v["rm"])[0, 1] / np.var(v["rm"], ddof=1),
    "kelly_continuous": lambda v: (v["mu"] - v["r"]) / 100 / (v["s"] / 100) ** 2,
    "parametric_var": lambda v: __import__("scipy.stats").stats.norm.ppf(v["c"] / 100) * _num(v["V"]) * v["s"] / 100,
    "parametric_cvar": _es,
    "npv": lambda v: -v["c0"] + sum(cf / (1 + v["r"] / 100) ** t for t, cf in enumerate(v["cf"], 1)),
    "irr": lambda v: 100 * _irr(v["c0"], v["cf"]),
    "bond_price": lambda v: _bond_price(1000, v["c"] / 100, _num(v["y"]) / 100, v["n"])[0],
    "yield_to_maturity": lambda v: 100 * _irr(v["p"], _bond_price(1000, v["c"] / 100, 0, v["n"])[1]),
    "macaulay_duration": _macaulay,
    "modified_duration": lambda v: v["D"] / (1 + _num(v["y"]) / 100),
    "black_scholes_call": lambda v: _bs(v, "call"),
    "black_scholes_put": lambda v: _bs(v, "put"),
    "put_call_parity": lambda v: _num(v["C"]) - v["S"] + v["K"] * math.exp(-_num(v["r"]) / 100 * _num(v["T"])),
}


@pytest.mark.parametrize("family", quant.FAMILIES.names())
def test_family_gold_matches_independent_computation(family):
    rng = random.Random(123)
    for _ in range(200):
        p = quant.generate(family, rng)
        want = independent(p)
        assert p.answer == pytest.approx(want, rel=2e-3, abs=0.006), (p.question, p.solution())


@pytest.mark.parametrize("family", quant.FAMILIES.names())
def test_answer_shows_formula_substitution_and_final_line(family):
    p = quant.generate(family, random.Random(7))
    lines = p.solution().splitlines()
    assert lines[0].startswith("Formula:")
    assert lines[1].startswith("Substitute:")
    assert re.fullmatch(r"Final answer: -?\d+(\.\d+)?", lines[-1])
    assert numbers(lines[-1])[0] == pytest.approx(p.answer)


def test_generation_is_deterministic_and_spread_over_families():
    a = [p.question for p in quant.generate_set(50, seed=3)]
    b = [p.question for p in quant.generate_set(50, seed=3)]
    assert a == b
    assert {p.family for p in quant.generate_set(50, seed=3)} == set(quant.FAMILIES.names())


def test_heldout_template_never_used_for_training_draws():
    last = {n: len(quant.FAMILIES.get(n).templates) - 1 for n in quant.FAMILIES.names()}
    assert all(p.template != last[p.family] for p in quant.generate_set(500, seed=1))
    assert all(p.template == last[p.family] for p in quant.generate_unseen(50, seed=1))



def _words(template: str) -> set[str]:
    return set(re.sub(r"\{[^}]*\}|[$%,.?:;()/=]", " ", template.lower()).split())


def test_every_family_trains_on_ten_phrasings_none_a_copy_of_the_heldout_one():
    """Unseen wording is measured on each family's last phrasing: training sees
    ten others, and none shares more than 60% of its words with it (the
    placeholders aside), so the unseen split stays unseen."""
    for name in quant.FAMILIES.names():
        *train, held = quant.FAMILIES.get(name).templates
        assert len(set(train)) >= 10, name
        for t in train:
            a, b = _words(t), _words(held)
            assert len(a & b) / len(a | b) <= 0.6, (name, t)


def test_word_overlap_guard_catches_a_lightly_edited_copy():
    held = quant.FAMILIES.get("cagr").templates[-1]
    edited = held.replace("What annual", "Which annual")
    a, b = _words(edited), _words(held)
    assert len(a & b) / len(a | b) > 0.6

def test_at_least_twenty_five_families():
    need = {"compound_interest", "continuous_compounding", "cagr", "drawdown", "max_drawdown",
            "volatility_annualization", "sharpe_ratio", "sortino_ratio", "treynor_ratio", "information_ratio",
            "beta_from_returns", "capm_expected_return", "kelly_binary", "kelly_continuous", "parametric_var",
            "parametric_cvar", "npv", "irr", "bond_price", "yield_to_maturity", "macaulay_duration",
            "modified_duration", "black_scholes_call", "black_scholes_put", "put_call_parity", "position_size",
            "expected_value_trade", "breakeven_win_rate", "compound_return_series"}
    assert need <= set(quant.FAMILIES.names()) and len(quant.FAMILIES.names()) >= 25


def test_default_profile_eval_limit_covers_every_family_in_both_splits(tmp_path):
    """The CPU profile evaluates 58 of the held-out items: one unseen phrasing and
    one fresh draw of every family, so each family's accuracy is reported."""
    from fintune import data
    from fintune.config import build_config, load_yaml
    from fintune.eval.stage import eval_sets

    (tmp_path / "none").mkdir()
    profile = load_yaml(Path(__file__).resolve().parent.parent / "configs" / "cpu-smollm2.yaml")
    cfg = build_config(profile, {"dataset_folder": str(tmp_path / "none"), "data_dir": str(tmp_path / "out"),
                                 "contamination_files": "", "token_check": False})
    data.run(cfg)
    items = eval_sets(cfg)[0][1]
    assert len(items) == cfg.eval.eval_limit == 58
    seen = {(it["meta"]["family"], it["meta"]["split"]) for it in items}
    assert seen == {(f, s) for f in quant.FAMILIES.names() for s in ("unseen_template", "random")}
