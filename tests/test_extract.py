"""Answer extraction and scoring on outputs shaped like real model replies."""
import pytest

from fintune.eval.extract import extract, score, wilson

CASES = [
    ("Formula: FV = P × (1 + r)^n\nFV = 1000 × 1.157625 = 1157.63\nFinal answer: 1157.63", 1157.63, "final_answer"),
    ("Final answer: $1,157.63", 1157.63, "final_answer"),
    ("Final Answer: 12.5%", 12.5, "final_answer"),
    ("**Final answer:** -54.2", -54.2, "final_answer"),
    ("The NPV is negative.\nFinal answer: (1,200.50)", -1200.5, "final_answer"),
    ("<think>Let me compute 2 × 3 = 6. Final answer: 6</think>\nThe result is \\boxed{7}", 7.0, "boxed"),
    ("So the answer is $\\boxed{0.0564}$.", 0.0564, "boxed"),
    ('{"answer": 3.2e-2}', 0.032, "json"),
    ("Sharpe = 0.6 / 1.5 = 0.4", 0.4, "last_number"),
    ("I cannot answer that.", None, "none"),
    ("Final answer: 1.2E3", 1200.0, "final_answer"),
    ("Final answer: €2,500", 2500.0, "final_answer"),
]


@pytest.mark.parametrize("text,value,method", CASES)
def test_extract(text, value, method):
    ex = extract(text)
    assert ex.method == method
    assert ex.value == (pytest.approx(value) if value is not None else None)


def test_unclosed_think_block_is_not_scored():
    assert extract("<think>so 42 maybe").method == "none"


def test_percent_for_fraction_and_reverse_counted_separately():
    s = score(5.64, 0.0564)
    assert s.correct and s.scaled and not s.correct_strict
    s = score(0.0564, 5.64)
    assert s.correct and s.scaled
    s = score(5.64, 5.64)
    assert s.correct and not s.scaled and s.correct_strict


def test_tolerances():
    assert score(101.0, 100.0).correct            # 1% relative
    assert not score(101.5, 100.0).correct
    assert not score(100.5, 100.0).correct_strict  # 0.2% strict
    assert score(100.1, 100.0).correct_strict
    assert score(0.003, 0.0).correct              # absolute tolerance near zero
    assert not score(None, 1.0).correct


def test_wilson_interval():
    lo, hi = wilson(0, 60)
    assert lo == 0 and 0.05 < hi < 0.07
    lo, hi = wilson(30, 60)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(0.245, abs=0.01)


def _item(i, family, split="unseen_template", solution=None):
    meta = {"family": family, "split": split}
    if solution:
        meta["solution"] = solution
    return {"id": f"{family}-{i}", "question": "q", "answer_numeric": 2.0, "meta": meta}


def test_stratified_limit_takes_every_family_before_a_second_item_of_any():
    from fintune.eval.report import stratified

    items = [_item(i, fam, split) for fam in ("a", "b", "c") for i, split in
             enumerate(["unseen_template", "random", "unseen_template"])]
    picked = stratified(items, 4)
    assert [it["id"] for it in picked] == ["a-0", "b-0", "c-0", "a-1"]
    assert stratified(items, 100) == stratified(items, len(items)) and len(stratified(items, 100)) == 9


def test_per_family_report_tells_formula_from_arithmetic():
    from fintune.eval.report import markdown, score_set

    sol = "Formula: x = a + b\nSubstitute: a = 1, b = 1\nx = 1 + 1 = 2\nFinal answer: 2"
    items = [_item(0, "add", solution=sol), _item(1, "add", "random", solution=sol), _item(2, "mul")]
    outputs = [sol,                                                      # all right
               "Formula: x = a + b\nSubstitute: a = 1, b = 2\nFinal answer: 3",  # formula only
               "Final answer: 7"]                                        # no worked solution to compare
    res, _ = score_set("m", "heldout", items, outputs, 1.0)
    assert res["per_category"]["add"] == {"n": 2, "correct": 1, "accuracy": 0.5, "formula_right": 2,
                                          "substitution_right": 1}
    assert res["per_category"]["mul"]["correct"] == 0
    assert res["formula_rate"] == 1.0 and res["substitution_rate"] == 0.5
    assert res["per_split"]["random"] == {"n": 1, "correct": 0, "accuracy": 0.0}
    md = markdown([res])
    assert "| add | 1/2 (f 2, s 1) |" in md and "| mul | 0/1 (f 0, s 0) |" in md
    assert "| [random] | 0/1 |" in md and "| [unseen_template] | 1/2 |" in md
