"""Every generated family's worked solution with the calculator, and the rows that
offer it: the tool's own results, answers that agree with the by-hand gold, a share
of rows set by data.tool_fraction, and every row under max_seq_length with SmolLM2's
real tokenizer."""
import copy
import dataclasses
import random
from collections import Counter

import pytest

from fintune.calculator import TOOL_NAME, TOOL_SCHEMA, run_tool_call
from fintune.config import DataConfig, PipelineConfig
from fintune.data import quant
from fintune.data.prepare import offers_tools, problem_to_chat
from fintune.data.quant_tools import BUILDERS, tool_solution
from fintune.prompts import user_prompt
from fintune.scoring.extract import REL, close
from fintune.templates import FAMILIES, tokenize_example, use_tools_template

FAMILY_NAMES = quant.FAMILIES.names()


def test_every_family_has_a_tool_solution():
    assert sorted(BUILDERS.names()) == sorted(FAMILY_NAMES) and len(FAMILY_NAMES) >= 29


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_tool_solution_answers_agree_with_the_by_hand_gold(family):
    for seed in range(60):
        p = quant.generate(family, random.Random(seed))
        sol = tool_solution(p)
        # the results are the calculator's, as the model will see them
        assert all(run_tool_call(TOOL_NAME, {"expression": e}) == r for e, r in sol.calls)
        assert sol.opening.split("\n")[0].startswith("Formula:") and \
            sol.opening.split("\n")[1].startswith("Substitute:")
        assert sol.opening == "\n".join(p.steps[:2])
        *_, result_line, final = sol.closing.split("\n")
        assert sol.calls[-1][1] in result_line and final.startswith("Final answer: ")
        answer = float(final.removeprefix("Final answer: "))
        # the eval's own tolerance (fintune/scoring/extract.py close)
        assert close(answer, p.answer, REL, 1e-4), (family, seed, sol, p.answer)


def test_tool_row_is_an_openai_tool_conversation():
    p = quant.generate("black_scholes_call", random.Random(1))
    row = problem_to_chat(p, 0, tools=True)
    assert row["tools"] == [TOOL_SCHEMA]
    roles = [m["role"] for m in row["messages"]]
    assert roles[0] == "user" and roles[-1] == "assistant"
    assert row["messages"][0]["content"] == user_prompt(p.question)
    calls = [m for m in row["messages"] if m.get("tool_calls")]
    results = [m["content"] for m in row["messages"] if m["role"] == "tool"]
    assert len(calls) == len(results) >= 1 and roles[1:-1] == ["assistant", "tool"] * len(results)
    assert calls[0]["content"].startswith("Formula:")
    for m, r in zip(calls, results):
        fn = m["tool_calls"][0]["function"]
        assert fn["name"] == TOOL_NAME and run_tool_call(fn["name"], fn["arguments"]) == r
    plain = problem_to_chat(p, 0, tools=False)
    assert "tools" not in plain and plain["messages"][-1]["content"] == p.solution()


def test_tool_fraction_sets_the_share_of_rows_offering_the_tool():
    d = PipelineConfig().data
    assert d.tool_fraction == 0.5  # the default run learns the tool
    share = sum(offers_tools(d, 4000)) / 4000
    assert 0.45 < share < 0.55
    assert not any(offers_tools(dataclasses.replace(d, tool_fraction=0.0), 500))
    assert all(offers_tools(dataclasses.replace(d, tool_fraction=1.0), 500))


def test_tool_fraction_is_checked():
    with pytest.raises(Exception, match="tool_fraction must be in"):
        DataConfig(tool_fraction=1.5)


def test_every_tool_row_fits_max_seq_length_with_smollm2(tokenizer):
    """All 29 families, the tool row and the by-hand row, with the real tokenizer and
    the template training uses; the tool row keeps room to spare under 512."""
    tok = copy.deepcopy(tokenizer)
    family = use_tools_template(tok)
    max_len = PipelineConfig().model.max_seq_length
    longest = Counter()
    for seed in range(8):
        for name in FAMILY_NAMES:
            p = quant.generate(name, random.Random(seed))
            row = problem_to_chat(p, 0, tools=True)
            n = len(tokenize_example(tok, family, row["messages"], row["tools"])["input_ids"])
            longest[name] = max(longest[name], n)
    assert max(longest.values()) <= max_len - 32, longest.most_common(3)
    assert FAMILIES.get("chatml") is family
