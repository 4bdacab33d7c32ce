"""Rewritten training phrasings: same problem, other surface; the held-out
phrasing's vocabulary never leaks into training through a rewrite."""
import random
import re

import pytest

from fintune.config import DataConfig
from fintune.data import paraphrase, quant
from fintune.data.prepare import quant_draws


def _words(text: str) -> set[str]:
    return set(re.sub(r"\{[^}]*\}|[$%,.?:;()/=!]", " ", text.lower()).split())


def _leaked(rewrite, draws: int = 60) -> dict[str, set[str]]:
    """Per family: words of its held-out phrasing that rewrites of its training
    phrasings bring in although no training phrasing of it has them."""
    rng = random.Random(0)
    out = {}
    for name in quant.FAMILIES.names():
        *train, held = quant.FAMILIES.get(name).templates
        before = set().union(*map(_words, train))
        after = set().union(*(_words(rewrite(t, rng)) for t in train for _ in range(draws)))
        new = (after - before) & _words(held)
        if new:
            out[name] = new
    return out


def test_rewrites_bring_no_word_of_the_heldout_phrasing():
    assert _leaked(paraphrase.rewrite) == {}


def test_leak_check_catches_a_rewrite_that_borrows_heldout_words():
    def borrowing(t, rng):
        return paraphrase.rewrite(t, rng).replace("portfolio", "book")
    assert "book" in _leaked(borrowing).get("parametric_var", set())


def test_every_rewrite_keeps_each_placeholder_once():
    rng = random.Random(1)
    for name in quant.FAMILIES.names():
        for t in quant.FAMILIES.get(name).templates[:-1]:
            for _ in range(30):
                r = paraphrase.rewrite(t, rng)
                assert sorted(paraphrase.PLACEHOLDER.findall(r)) == sorted(paraphrase.PLACEHOLDER.findall(t)), (t, r)


def test_given_values_are_shuffled_only_in_short_one_value_lists():
    rng = random.Random(0)
    listed = "Stock price ${S}, strike ${K}, {T} years to expiry, risk-free rate {r}%."
    seen = {paraphrase.shuffle_given(listed, rng) for _ in range(40)}
    items = {"stock price ${S}", "strike ${K}", "{T} years to expiry", "risk-free rate {r}%"}
    assert len(seen) > 5
    for s in seen:
        assert s.endswith(".") and (s[0].isupper() or s.startswith("{")), s
        assert {i[0].lower() + i[1:] for i in s[:-1].split(", ")} == items, s
    prose = "What should you pay for a bond with {n} years left, a {c}% coupon paid yearly and ${F} par, to earn {y}%?"
    assert {paraphrase.shuffle_given(prose, rng) for _ in range(20)} == {prose}
    symbols = "beta = {beta}, Rf = {rf}%, Rm = {rm}%"
    assert all(s.split()[0] in ("beta", "Rf", "Rm") for s in (paraphrase.shuffle_given(symbols, rng) for _ in range(20)))


def test_paraphrase_changes_wording_only():
    """Same families, phrasing indices, numbers, worked solutions and answers;
    most rewritten questions read differently."""
    plain = quant.generate_set(290, seed=5)
    para = quant.generate_set(290, seed=5, paraphrase=1.0)
    assert [(p.family, p.template, p.solution(), p.answer) for p in plain] == \
           [(p.family, p.template, p.solution(), p.answer) for p in para]
    changed = sum(a.question != b.question for a, b in zip(plain, para))
    assert changed > 0.7 * len(plain)
    half = quant.generate_set(290, seed=5, paraphrase=0.5)
    assert 0.25 * 290 < sum(a.question != b.question for a, b in zip(plain, half)) < 0.6 * 290


def test_heldout_splits_do_not_depend_on_paraphrase():
    train0, unseen0, fresh0 = quant_draws(DataConfig(num_generated=300))
    train1, unseen1, fresh1 = quant_draws(DataConfig(num_generated=300, paraphrase=0.5))
    assert [p.question for p in unseen0] == [p.question for p in unseen1]
    assert [p.question for p in fresh0] == [p.question for p in fresh1]
    assert [p.question for p in train0] != [p.question for p in train1]


def test_paraphrase_must_be_a_fraction():
    from fintune.config import ConfigError
    with pytest.raises(ConfigError, match="data.paraphrase"):
        DataConfig(paraphrase=1.5)
