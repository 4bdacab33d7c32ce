"""Users' tool conversations: OpenAI-style rows (assistant `tool_calls`, `tool`
results, a `tools` list) and ShareGPT's `function_call` / `observation` turns become
one training schema; a malformed one is a reject naming file, line and field."""
import json

import pytest

from fintune.calculator import TOOL_SCHEMA
from fintune.data.formats import FORMATS, RowError
from test_data_sources import GOOD, _lines, _run

CALL = {"id": "c1", "type": "function", "function": {"name": "calculate", "arguments": '{"expression": "1000*1.05^2"}'}}
OPENAI = {"tools": [TOOL_SCHEMA], "messages": [
    {"role": "user", "content": "What does $1,000 grow to in 2 years at 5%?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "c1", "content": "1102.5"},
    {"role": "assistant", "content": "FV = 1102.5\nFinal answer: 1102.5"}]}
SHAREGPT = {"tools": json.dumps([TOOL_SCHEMA["function"]]), "conversations": [
    {"from": "human", "value": "What does $1,000 grow to in 2 years at 5%?"},
    {"from": "function_call", "value": json.dumps({"name": "calculate", "arguments": {"expression": "1000*1.05^2"}})},
    {"from": "observation", "value": "1102.5"},
    {"from": "gpt", "value": "FV = 1102.5\nFinal answer: 1102.5"}]}


def test_openai_tool_conversation_is_kept_with_its_tools():
    conv = FORMATS.get("messages").convert(OPENAI)
    assert conv.tools == [TOOL_SCHEMA]
    assert [m["role"] for m in conv.messages] == ["user", "assistant", "tool", "assistant"]
    call = conv.messages[1]
    # arguments given as JSON text are parsed: every call renders the same way in the template
    assert call["content"] == "" and call["tool_calls"] == [
        {"type": "function", "function": {"name": "calculate", "arguments": {"expression": "1000*1.05^2"}}}]
    assert conv.messages[2] == {"role": "tool", "content": "1102.5"}


def test_sharegpt_function_call_and_observation_become_the_same_conversation():
    a, b = FORMATS.get("sharegpt").convert(SHAREGPT), FORMATS.get("messages").convert(OPENAI)
    assert a.messages == b.messages and a.tools == b.tools


def _broken(path: list, value):
    row = json.loads(json.dumps(OPENAI))
    target = row
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return row


MALFORMED = {
    "arguments not JSON": (_broken(["messages", 1, "tool_calls", 0, "function", "arguments"], "{expression: 1"),
                           "messages[1].tool_calls[0].function.arguments", "not valid JSON"),
    "arguments a list": (_broken(["messages", 1, "tool_calls", 0, "function", "arguments"], [1, 2]),
                         "messages[1].tool_calls[0].function.arguments", "must be a JSON object"),
    "no function name": (_broken(["messages", 1, "tool_calls", 0, "function", "name"], ""),
                         "messages[1].tool_calls[0].function.name", "non-empty string"),
    "unknown function": (_broken(["messages", 1, "tool_calls", 0, "function", "name"], "browse"),
                         "messages[1].tool_calls[0].function.name", "not among the row's tools"),
    "no tools list": (_broken(["tools"], KeyError), "tools", "lists no tools"),
    "tools not a list": (_broken(["tools"], {"name": "calculate"}), "tools", "must be a list"),
    "no call and no text": (_broken(["messages", 1, "tool_calls"], []), "messages[1].content", "must be a string"),
    "call without a result": (_broken(["messages", 2], {"role": "user", "content": "and?"}),
                              "messages[2]", "have no tool result"),
    "tool_calls not a list": (_broken(["messages", 1, "tool_calls"], "calculate(1)"),
                              "messages[1].tool_calls", "must be a list"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_tool_rows_name_the_field(case):
    row, field, reason = MALFORMED[case]
    with pytest.raises(RowError) as e:
        FORMATS.get("messages").convert(row)
    assert e.value.field == field and reason in e.value.reason


def test_a_tool_result_must_answer_a_call():
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "3"},
                        {"role": "assistant", "content": "3"}]}
    with pytest.raises(RowError) as e:
        FORMATS.get("messages").convert(row)
    assert e.value.field == "messages[1].role" and "no tool call before it" in e.value.reason


def test_bad_sharegpt_function_call_names_the_turn():
    row = json.loads(json.dumps(SHAREGPT))
    row["conversations"][1]["value"] = "calculate(1+1)"
    with pytest.raises(RowError) as e:
        FORMATS.get("sharegpt").convert(row)
    assert e.value.field == "conversations[1].value" and "not valid JSON" in e.value.reason


def test_data_stage_keeps_tool_rows_and_rejects_malformed_ones_by_file_line_and_field(tmp_path):
    bad = MALFORMED["arguments not JSON"][0]
    out, rejects, stats = _run(tmp_path, {"tools.jsonl": _lines(OPENAI, bad, GOOD), "sg.jsonl": _lines(SHAREGPT)})
    rows = {r["id"]: r for r in map(json.loads, (out / "train.jsonl").read_text().splitlines())}
    # the same conversation from both files is trained once (the duplicate is counted)
    (kept,) = [rows[i] for i in ("tools-1", "sg-1") if i in rows]
    assert stats["counts"]["duplicates_removed"] == 1
    assert kept["tools"] == [TOOL_SCHEMA] and kept["messages"][2]["role"] == "tool"
    assert "tools-3" in rows and "tools" not in rows["tools-3"]
    assert stats["tokens"]["checked"] and stats["counts"].get("dropped_template", 0) == 0
    (reject,) = [r for r in rejects if "tools.jsonl" in r["where"]]
    assert reject["where"] == f"{tmp_path}/datasets/tools.jsonl:2"
    assert reject["field"] == "messages[1].tool_calls[0].function.arguments" and "not valid JSON" in reject["reason"]
