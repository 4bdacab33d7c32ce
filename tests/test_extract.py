"""Answer extraction and scoring on replies shaped like real model output.

SCORING_TABLE is the issue's contract: each row is (reply, gold, question,
accuracy verdict, lenient verdict, counted as rescaled)."""
import pytest

from fintune.scoring.extract import Expect, expectation, extract, score, wilson

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
    ("The final answer is $\\boxed{\\dfrac{3}{4}}$", 0.75, "boxed"),
]


@pytest.mark.parametrize("text,value,method", CASES)
def test_extract(text, value, method):
    ex = extract(text)
    assert ex.method == method
    assert ex.value == (pytest.approx(value) if value is not None else None)


LOOP = "z(12) = 1.575, z(13) = 1.575, z(14) = 1.575, z(15) = 1.575, z(16) = 1.5"
CUT = "Step 1: 1000 × 1.05 = 1050\nStep 2: 1050 × 1.05 = 1102.5\nStep 3: 1102.5 × 1.05 = 1157.625\nSo the"
Q = "What is the value?"
SCORING_TABLE = {
    # the two false positives: both wrong now
    "looping reply, no answer, gold 0.02": (LOOP, 0.02, "What is the required return?", False, False, False),
    "0.125 for gold 0": ("Final answer: 0.125", 0.0, "What is the abnormal return?", False, False, False),
    "5% for 0.05 (scale, marked by %)": ("Final answer: 5%", 0.05, Q, True, True, True),
    "5 for 0.05, nothing marked": ("Final answer: 5", 0.05, Q, False, False, False),
    "0.0499 for 0.05": ("Final answer: 0.0499", 0.05, Q, True, True, False),
    "-0.02 for 0.02": ("Final answer: -0.02", 0.02, Q, False, False, False),
    "thousands separators": ("Final answer: 1,234,567.89", 1234567.89, Q, True, True, False),
    "parentheses negative": ("The NPV is negative.\nFinal answer: (1,200.50)", -1200.5, Q, True, True, False),
    "boxed in think, final answer contradicts (final counts)":
        ("<think>I think it is \\boxed{3.2}</think>\nRechecking: 2 × 2.05 = 4.1\nFinal answer: 4.1", 3.2, Q,
         False, False, False),
    "same reply, gold of the final answer": (
        "<think>I think it is \\boxed{3.2}</think>\nRechecking: 2 × 2.05 = 4.1\nFinal answer: 4.1", 4.1, Q,
        True, True, False),
    "cut at the token limit, last number right": (CUT, 1157.625, Q, False, True, False),
    "two final answers, the last counts": ("Final answer: 10\nWait, recompute.\nFinal answer: 12", 10, Q,
                                           False, False, False),
    "working on the answer line: the number after its last =":
        ("Final Answer: FCF = $40,000 - $10,000 = $30,000", 30000, Q, True, True, False),
    "same line, gold of its first number": ("Final Answer: FCF = $40,000 - $10,000 = $30,000", 40000, Q,
                                            False, False, False),
    "LaTeX fraction in boxed": ("The answer is \\boxed{\\frac{1}{8}}", 0.125, Q, True, True, False),
    "LaTeX percent in boxed": ("\\boxed{12.5\\%}", 0.125, Q, True, True, True),
    "LaTeX dollars with {,}": ("\\boxed{\\$12{,}345.67}", 12345.67, Q, True, True, False),
    "nested boxed": ("\\boxed{\\boxed{3.2}}", 3.2, Q, True, True, False),
    "unit in text": ("\\boxed{2.5 \\text{ years}}", 2.5, Q, True, True, False),
    "JSON answer field": ('{"answer": 0.032}', 0.032, Q, True, True, False),
    "bps marked by the reply": ("Final answer: 25 bps", 0.0025, Q, True, True, True),
    "basis points asked by the question": ("Final answer: 25", 0.0025, "What is the spread in basis points?",
                                           True, True, True),
    "gold 0, rounds to 0 at 2 decimals": ("Final answer: 0.004", 0.0, "Answer with 2 decimal places.",
                                          True, True, False),
    "gold 0, no precision named": ("Final answer: 0.004", 0.0, Q, False, False, False),
    "small gold within 1e-4": ("Final answer: 0.00305", 0.003, Q, True, True, False),
    "small gold past 1e-4": ("Final answer: 0.0032", 0.003, Q, False, False, False),
    "question asks in percent, fraction given": ("Final answer: 0.125", 12.5, "What is the return, in percent?",
                                                 True, True, True),
    "rate given in %, answer in percent": ("Final answer: 6.17", 0.0617,
                                           "A loan charges a rate of 6% compounded monthly. What is the EAR?",
                                           True, True, True),
    "same number, nothing marked": ("Final answer: 6.17", 0.0617, "What is the ratio of A to B?",
                                    False, False, False),
    "percent sign, gold in percent": ("Final answer: 6.17%", 6.17, Q, True, True, False),
    "1.5% off": ("Final answer: 101.5", 100.0, Q, False, False, False),
    "no number at all": ("I cannot answer that.", 1.0, Q, False, False, False),
    "final answer line in LaTeX": ("Final answer: $\\frac{3}{4}$", 0.75, Q, True, True, False),
    "R1 reply cut while reasoning (prompt opened <think>)": ("so the answer is \\boxed{42} maybe, wait", 42.0, Q,
                                                            False, True, False),
}


@pytest.mark.parametrize("case", SCORING_TABLE)
def test_scoring_table(case):
    reply, gold, question, right, lenient, scaled = SCORING_TABLE[case]
    ex = extract(reply, open_think=case.startswith("R1 reply cut"))
    s = score(ex, gold, expectation(question))
    assert (s.correct, s.correct_lenient, s.scaled) == (right, lenient, scaled), (ex, s)


def test_table_has_at_least_25_cases():
    assert len(SCORING_TABLE) >= 25


def test_strict_column_keeps_its_meaning():
    s = score(extract("Final answer: 100.5"), 100.0)
    assert s.correct and not s.correct_strict          # within 1%, not within 0.2%
    assert score(extract("Final answer: 100.1"), 100.0).correct_strict
    assert not score(extract("Final answer: 5%"), 0.05).correct_strict  # rescaled: not strict
    assert not score(extract("Sharpe = 0.4"), 0.4).correct_strict        # last number: not strict


def test_expectation_reads_precision_and_units():
    assert expectation("Round to two decimal places.").abs_tol == pytest.approx(0.005)
    assert expectation("Answer with 3 decimal places.").abs_tol == pytest.approx(0.0005)
    assert expectation("to the nearest cent").abs_tol == pytest.approx(0.005)
    assert expectation("What is the spread in basis points?") == Expect(0.5, False, True)
    assert expectation("What is the ratio?") == Expect()
    assert expectation("Give the answer as a percentage.").percent


def test_unclosed_think_block_is_not_scored():
    assert extract("<think>so 42 maybe").method == "last_number"
    assert not score(extract("<think>so 42 maybe"), 42.0).correct


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
               "x is 2"]                                                 # right only by its last number
    res, _ = score_set("m", "heldout", items, outputs, 1.0)
    assert res["per_category"]["add"] == {"n": 2, "correct": 1, "accuracy": 0.5, "formula_right": 2,
                                          "substitution_right": 1}
    assert res["per_category"]["mul"]["correct"] == 0
    assert res["accuracy"] == pytest.approx(1 / 3) and res["accuracy_lenient"] == pytest.approx(2 / 3)
    assert res["correct_via_last_number"] == 1 and res["format_rate"] == pytest.approx(2 / 3)
    assert res["formula_rate"] == 1.0 and res["substitution_rate"] == 0.5
    assert res["per_split"]["random"] == {"n": 1, "correct": 0, "accuracy": 0.0, "formula_right": 1,
                                          "substitution_right": 0, "format": 1}
    md = markdown([res])
    assert "| add | 1/2 (f 2, s 1) |" in md and "| mul | 0/1 (f 0, s 0) |" in md
    assert "| [random] | 0/1 (f 1, s 0) |" in md and "| [unseen_template] | 1/2 (f 1, s 1) |" in md
    assert "| 33.3% |" in md and "lenient" in md and "Scoring: accuracy: explicit answer" in md


@pytest.mark.parametrize("instruction", ["final_answer", "boxed"])
@pytest.mark.parametrize("prompt_opens_think", [False, True])
def test_a_reply_of_the_trained_r1_shape_scores(instruction, prompt_opens_think):
    """Defect 7: what fintune/templates.py r1_reply trains is what the eval reads. The
    model writes `<think>\\n...\\n</think>\\n\\n{answer}`; where the prompt opened the block
    (the current R1 template) the reply starts after `<think>\\n`."""
    from fintune.prompts import restate_answer
    from fintune.templates import r1_reply

    written = r1_reply(restate_answer("FV = 1000 x 1.05^3\n= 1157.63\nFinal answer: 1157.63", instruction))
    reply = written.removeprefix("<think>\n") if prompt_opens_think else written
    ex = extract(reply, open_think=prompt_opens_think)
    assert ex.method == instruction and ex.value == 1157.63 and score(ex, 1157.63).correct
    # cut while still reasoning (no </think>): no answer, even if the reasoning names one
    assert extract(reply.split("</think>")[0], open_think=prompt_opens_think).method != instruction
