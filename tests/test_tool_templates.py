"""The tools-aware chat templates: what they render, what the loss trains and masks
in a tool conversation, and the reader of the calls a reply makes."""
import copy
import json

import pytest

from fintune.calculator import TOOL_SCHEMA
from fintune.registry import UnknownNameError
from fintune.templates import (FAMILIES, default_system_prompt, parse_tool_calls, tokenize_example,
                               use_tools_template)
from fintune.templates.tools import TOOL_FILES, segments, template_source

USER = {"role": "user", "content": "What is 2% of 50?"}
SYSTEM = {"role": "system", "content": "You are a careful financial analyst."}
CALL = {"type": "function", "function": {"name": "calculate", "arguments": {"expression": "0.02*50"}}}
TOOL_CONV = [USER, {"role": "assistant", "content": "Formula: x = p × V\nSubstitute: p = 0.02, V = 50",
                    "tool_calls": [CALL]},
             {"role": "tool", "content": "1"},
             {"role": "assistant", "content": "", "tool_calls": [
                 {"type": "function", "function": {"name": "calculate", "arguments": {"expression": "1+1"}}}]},
             {"role": "tool", "content": "2"},
             {"role": "assistant", "content": "x = 1\nFinal answer: 1"}]


@pytest.fixture(scope="module")
def tools_tokenizer(tokenizer):
    tok = copy.deepcopy(tokenizer)
    assert use_tools_template(tok).name == "chatml"
    return tok


def test_every_family_ships_a_tools_template():
    assert sorted(TOOL_FILES) == sorted(FAMILIES.names())
    for name in TOOL_FILES:
        assert "tool_calls" in template_source(name)


def test_r1_tools_template_keeps_the_line_llama_cpp_recognises():
    """common/chat-diff-analyzer.cpp's DeepSeek-R1-Distill-Qwen workaround is keyed on
    this exact text of the template; it sets R1's tool-call tokens as the markers."""
    assert ("{{'<\uff5cAssistant\uff5c><\uff5ctool\u2581calls\u2581begin\uff5c><\uff5ctool\u2581call\u2581begin"
            "\uff5c>' + tool['type'] + '<\uff5ctool\u2581sep\uff5c>'") in template_source("deepseek-r1")


@pytest.mark.parametrize("variant", ["r1_tokenizer", "r1_tokenizer_think"])
def test_r1_tools_template_renders_plain_conversations_as_r1_did(variant, request):
    own = request.getfixturevalue(variant)
    tok = copy.deepcopy(own)
    assert use_tools_template(tok).name == "deepseek-r1"
    reply = {"role": "assistant", "content": "<think>\nr\n</think>\n\nA"}
    for conv in ([USER], [SYSTEM, USER], [USER, reply, USER]):
        for gen in (True, False):
            assert tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen) == \
                own.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)


def test_r1_tool_row_trains_calls_and_answer_in_r1_tokens(r1_tokenizer):
    """The R1 tool row: the call turn as the template renders it, the tool outputs
    masked, and the answer after them written as R1 writes a reply."""
    tok = copy.deepcopy(r1_tokenizer)
    fam = use_tools_template(tok)
    spans = segments(tok, fam, TOOL_CONV, [TOOL_SCHEMA])
    assert [t for _, t in spans] == [False, True, False, True, False, True]
    trained = [s for s, t in spans if t]
    assert trained[0].startswith("Formula:") and "<\uff5ctool\u2581calls\u2581begin\uff5c>" in trained[0]
    assert trained[0].endswith("<\uff5ctool\u2581calls\u2581end\uff5c><\uff5cend\u2581of\u2581sentence\uff5c>")
    assert trained[2] == "<think>\nx = 1\n</think>\n\nFinal answer: 1" + tok.eos_token
    masked = [s for s, t in spans if not t]
    assert masked[1] == ("<\uff5ctool\u2581outputs\u2581begin\uff5c><\uff5ctool\u2581output\u2581begin\uff5c>1"
                         "<\uff5ctool\u2581output\u2581end\uff5c><\uff5ctool\u2581outputs\u2581end\uff5c>")
    # the calls and results, up to the answer, are the template's own rendering
    rendered = tok.apply_chat_template(TOOL_CONV[:-1], tools=[TOOL_SCHEMA], tokenize=False,
                                       add_generation_prompt=True)
    assert "".join(s for s, _ in spans[:-1]) == rendered


@pytest.mark.parametrize("conv", [[USER], [SYSTEM, USER],
                                  [SYSTEM, USER, {"role": "assistant", "content": "1"}, USER]])
def test_chatml_tools_template_renders_conversations_without_tools_as_smollm2_did(conv, tokenizer,
                                                                                tools_tokenizer):
    """The no-tool rows, and the no-tool eval, see the prompt they saw before."""
    for gen in (True, False):
        assert tools_tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen) == \
            tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
    assert default_system_prompt(tokenizer.chat_template) in tools_tokenizer.chat_template


def test_chatml_tools_are_listed_in_the_system_turn_and_calls_in_the_hermes_shape(tools_tokenizer):
    text = tools_tokenizer.apply_chat_template(TOOL_CONV, tools=[TOOL_SCHEMA], tokenize=False)
    system = text.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert "<tools>\ncalculate(expression)\n</tools>" in system
    # the shape of Qwen2.5's template, which llama.cpp's tests/test-chat.cpp parses
    assert '<tool_call>\n{"name": "calculate", "arguments": {"expression":"0.02*50"}}\n</tool_call><|im_end|>' in text
    assert "<|im_start|>user\n<tool_response>\n1\n</tool_response><|im_end|>\n" in text
    # a JSON-string argument (what OpenAI clients send back) renders the same as an object
    as_string = copy.deepcopy(TOOL_CONV)
    for m in as_string:
        for c in m.get("tool_calls", []):
            c["function"]["arguments"] = json.dumps(c["function"]["arguments"], separators=(",", ":"))
    assert tools_tokenizer.apply_chat_template(as_string, tools=[TOOL_SCHEMA], tokenize=False) == text


def test_tool_rows_fit_the_schema_in_few_tokens(tools_tokenizer):
    """The tool list costs a few tokens, not the ~400 of Qwen's full Hermes prose."""
    def n(**kw):
        text = tools_tokenizer.apply_chat_template([USER], tokenize=False, add_generation_prompt=True, **kw)
        return len(tools_tokenizer(text, add_special_tokens=False)["input_ids"])

    assert 0 < n(tools=[TOOL_SCHEMA]) - n() <= 20


def test_tool_conversation_trains_the_calls_and_answer_and_masks_schema_and_results(tools_tokenizer):
    fam = FAMILIES.get("chatml")
    ex = tokenize_example(tools_tokenizer, fam, TOOL_CONV, [TOOL_SCHEMA])
    full = tools_tokenizer.apply_chat_template(TOOL_CONV, tools=[TOOL_SCHEMA], tokenize=False)
    # the trained text is what the model's own template renders, token for token
    assert ex["input_ids"] == tools_tokenizer(full, add_special_tokens=False)["input_ids"]
    spans, current = [], None
    for tid, label in zip(ex["input_ids"], ex["labels"]):
        trained = label != -100
        if current is None or current[0] != trained:
            current = [trained, []]
            spans.append(current)
        current[1].append(tid)
        assert not trained or label == tid
    text = [(trained, tools_tokenizer.decode(ids)) for trained, ids in spans]
    assert [t for t, _ in text] == [False, True, False, True, False, True]
    trained_text = [s for t, s in text if t]
    assert trained_text[0].startswith("Formula:") and '"expression":"0.02*50"' in trained_text[0]
    assert trained_text[1].startswith("<tool_call>") and trained_text[2].startswith("x = 1\nFinal answer: 1")
    masked = [s for t, s in text if not t]
    # masked: the system turn with the tool list and the question, then exactly the tool results' turns
    assert "<tools>" in masked[0] and "What is 2% of 50?" in masked[0]
    assert masked[1:] == ["<|im_start|>user\n<tool_response>\n1\n</tool_response><|im_end|>\n<|im_start|>assistant\n",
                          "<|im_start|>user\n<tool_response>\n2\n</tool_response><|im_end|>\n<|im_start|>assistant\n"]
    assert all("<tools>" not in s and "<tool_response>" not in s for s in trained_text)


def test_plain_conversation_still_trains_only_the_last_reply(tools_tokenizer):
    conv = [SYSTEM, USER, {"role": "assistant", "content": "earlier"}, USER,
            {"role": "assistant", "content": "Final answer: 1"}]
    assert [t for _, t in segments(tools_tokenizer, FAMILIES.get("chatml"), conv)] == [False, True]


def test_a_template_that_already_lists_tools_is_kept(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = tokenizer.chat_template + "{% if tools %}{{ tools | length }}{% endif %}"
    own = tok.chat_template
    use_tools_template(tok)
    assert tok.chat_template == own


def test_parse_chatml_tool_calls():
    reply = ('Formula: ...\n<tool_call>\n{"name": "calculate", "arguments": {"expression":"1+2"}}\n</tool_call>'
             '<tool_call>{"name": "calculate", "arguments": "{\\"expression\\": \\"3\\"}"}</tool_call>'
             "<tool_call>\n{not json}\n</tool_call>")
    calls = parse_tool_calls(reply, "chatml")
    assert calls[0] == {"name": "calculate", "arguments": {"expression": "1+2"}}
    assert calls[1] == {"name": "calculate", "arguments": {"expression": "3"}}
    assert calls[2]["name"] is None and "not JSON" in calls[2]["error"]
    assert parse_tool_calls("Final answer: 3", "chatml") == []


def test_parse_r1_and_llama3_tool_calls():
    r1 = ("<\uff5ctool\u2581calls\u2581begin\uff5c><\uff5ctool\u2581call\u2581begin\uff5c>function<\uff5ctool\u2581sep\uff5c>"
          "calculate\n```json\n{\"expression\": \"2*3\"}\n```<\uff5ctool\u2581call\u2581end\uff5c>"
          "<\uff5ctool\u2581calls\u2581end\uff5c>")
    assert parse_tool_calls(r1, "deepseek-r1") == [{"name": "calculate", "arguments": {"expression": "2*3"}}]
    assert parse_tool_calls('{"name": "calculate", "parameters": {"expression": "2*3"}}', "llama3") == \
        [{"name": "calculate", "arguments": {"expression": "2*3"}}]


def test_unknown_tool_call_format_lists_the_known_ones():
    with pytest.raises(UnknownNameError) as e:
        parse_tool_calls("x", "mistral")
    assert all(n in str(e.value) for n in ("chatml", "deepseek-r1", "llama3"))
