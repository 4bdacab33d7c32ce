"""Every generator family's gold answer against an independent computation."""
import math
import random
import re

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
    raise AssertionError(f"no independent computation for family {f}")


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


def test_at_least_six_families_from_the_skeleton():
    need = {"compound_interest", "drawdown", "sharpe_ratio", "volatility_annualization", "kelly_binary", "cagr"}
    assert need <= set(quant.FAMILIES.names())
