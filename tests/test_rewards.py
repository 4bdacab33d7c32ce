"""GRPO's rewards (fintune/train/rewards.py): a table of replies with what each
component gives them. The judgement is the eval's: the stop rule
(fintune/scoring/stop.py cut), then the scorer (fintune/scoring/extract.py), and the
formula / substitution lines as eval/report.py step_matches counts them."""
import math

import pytest

from fintune.config import build_config
from fintune.train import rewards

Q = "A fund returned 12% with 15% volatility; the risk-free rate is 3%. What is its Sharpe ratio?"
SOL = ("Formula: Sharpe = (R - Rf) / σ\nSubstitute: Sharpe = (12 - 3) / 15\nSharpe = 9 / 15 = 0.6\n"
       "Final answer: 0.6")
Q_PCT = "A stock went from $50 to $56. What was the return in percent?"
Q_BARE = "A stock went from $50 to $56. What was the simple return as a decimal?"
Q_USD = "What is the future value of $1,000 at 5% a year for 3 years?"
LOOP_LINE = "Sharpe = 9 / 15\n"

# (case, reply, open_think, question, gold, solution) -> (correct, format, steps)
TABLE = [
    ("worked solution", SOL, False, Q, 0.6, SOL, (1, 1, 1.0)),
    ("wrong formula line, right numbers",
     SOL.replace("(R - Rf) / σ", "R / σ"), False, Q, 0.6, SOL, (1, 1, 0.5)),
    ("right formula, wrong substitution and answer",
     SOL.replace("(12 - 3) / 15", "(12 - 3) / 10").replace("0.6", "0.9"), False, Q, 0.6, SOL, (0, 1, 0.5)),
    ("right lines, wrong final answer", SOL.replace("Final answer: 0.6", "Final answer: 0.7"),
     False, Q, 0.6, SOL, (0, 1, 1.0)),
    ("no answer line: the last number is not an answer", SOL.rsplit("\n", 1)[0], False, Q, 0.6, SOL, (0, 0, 1.0)),
    ("boxed", "Sharpe = 9 / 15\n\\boxed{0.6}", False, Q, 0.6, SOL, (1, 1, 0.0)),
    ("boxed LaTeX fraction", "\\boxed{\\frac{3}{5}}", False, Q, 0.6, None, (1, 1, None)),
    ("JSON answer", '{"answer": 0.6}', False, Q, 0.6, None, (1, 1, None)),
    ("R1: reasoning closed, then the answer", "The excess return is 9.\n</think>\n\nFinal answer: 0.6",
     True, Q, 0.6, None, (1, 1, None)),
    ("R1: reasoning closed, boxed after it", "9 / 15\n</think>\nThe Sharpe ratio is \\boxed{0.6}.",
     True, Q, 0.6, None, (1, 1, None)),
    ("R1: no </think>, answer inside the reasoning (cut at the limit)", "9 / 15 = 0.6. Final answer: 0.6\nWait,",
     True, Q, 0.6, None, (0, 0, None)),
    ("R1: boxed before </think>, nothing after", "so \\boxed{0.6}\n</think>\n", True, Q, 0.6, None, (0, 0, None)),
    ("think block without an R1 prompt", "<think>9 / 15</think>\nFinal answer: 0.6", False, Q, 0.6, None,
     (1, 1, None)),
    ("looping line: cut at its third repeat, before the answer", LOOP_LINE * 6 + "Final answer: 0.6", False, Q, 0.6,
     SOL, (0, 0, 0.0)),
    ("looping text at the token limit", "Sharpe = 0.6 x 0.6 = " + "0.6 x 0.6 = " * 20, False, Q, 0.6, SOL,
     (0, 0, 0.0)),
    ("cut at the token limit mid-substitution", "Formula: Sharpe = (R - Rf) / σ\nSubstitute: Sharpe = (12 -",
     False, Q, 0.6, SOL, (0, 0, 0.5)),
    ("stop rule: the first final answer counts", "Final answer: 0.7\nNo, 9 / 15.\nFinal answer: 0.6",
     False, Q, 0.6, None, (0, 1, None)),
    ("percent asked, percent written", "Final answer: 12%", False, Q_PCT, 0.12, None, (1, 1, None)),
    ("no percent anywhere: a bare 12 is not 0.12", "Final answer: 12", False, Q_BARE, 0.12, None, (0, 1, None)),
    ("within 1%", "Final answer: 0.604", False, Q, 0.6, None, (1, 1, None)),
    ("outside 1%", "Final answer: 0.61", False, Q, 0.6, None, (0, 1, None)),
    ("currency with separators", "Final answer: $1,157.63", False, Q_USD, 1157.625, None, (1, 1, None)),
    ("answer line in words", "9 / 15\nFinal answer: about three fifths", False, Q, 0.6, None, (0, 0, None)),
    ("empty reply", "", False, Q, 0.6, SOL, (0, 0, 0.0)),
]


def _call(f, reply, open_think, question, gold, solution, ids=None):
    return f(prompts=["p"], completions=[reply], completion_ids=[ids or [1, 2, 3]], gold=[gold],
             question=[question], solution=[solution], open_think=[open_think])[0]


@pytest.mark.parametrize("case,reply,open_think,question,gold,solution,expected", TABLE, ids=[t[0] for t in TABLE])
def test_reward_table(case, reply, open_think, question, gold, solution, expected):
    got = tuple(_call(f, reply, open_think, question, gold, solution)
                for f in (rewards.correct, rewards.answer_format, rewards.steps))
    assert got == expected, case


def test_table_covers_what_the_issue_asks():
    assert len(TABLE) >= 20
    names = " ".join(t[0] for t in TABLE)
    for must in ("R1: reasoning closed", "R1: no </think>", "boxed", "looping", "cut at the token limit"):
        assert must in names


def test_conversational_completions_are_judged_like_text():
    # TRL passes [{"role": "assistant", "content": ...}] for chat prompts (grpo_trainer.py,
    # GRPOTrainer._generate_single_turn's callers: `completions = [[{"role": "assistant", ...}]]`)
    chat = [{"role": "assistant", "content": "Final answer: 0.6"}]
    assert _call(rewards.correct, chat, False, Q, 0.6, None) == 1.0
    assert _call(rewards.answer_format, chat, False, Q, 0.6, None) == 1.0


def test_length_penalty_and_the_names_trl_logs():
    off = build_config(overrides={"grpo_length_penalty": 0.0, "grpo_max_completion_length": 100}).train
    on = build_config(overrides={"grpo_length_penalty": 0.2, "grpo_max_completion_length": 100}).train
    # TRL logs rewards/<name>/mean by the function's __name__ (trl/trainer/utils.py get_callable_name)
    assert [f.__name__ for f in rewards.reward_funcs(off)] == ["correct", "format", "steps"]
    funcs = rewards.reward_funcs(on)
    assert [f.__name__ for f in funcs] == ["correct", "format", "steps", "length"]
    length = funcs[-1]
    assert _call(length, "x", False, Q, 0.6, None, ids=list(range(50))) == pytest.approx(-0.1)
    assert _call(length, "x", False, Q, 0.6, None, ids=list(range(100))) == pytest.approx(-0.2)


def test_component_means_leave_rows_without_steps_out():
    cfg = build_config().train
    rows = [{"gold": 0.6, "question": Q, "solution": SOL, "open_think": False},
            {"gold": 0.6, "question": Q, "solution": None, "open_think": False}]
    means = rewards.component_means([SOL, "Final answer: 0.7"], rows, cfg, [10, 10])
    assert means["correct"] == 0.5 and means["format"] == 1.0 and means["steps"] == 1.0
    assert math.isnan(rewards.component_means(["x"], rows[1:], cfg, [1])["steps"])
