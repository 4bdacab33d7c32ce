"""Tool calling in each chat-template family: the tools-aware Jinja template a model
is trained, evaluated and served with, the reader of the calls a reply makes, and
the split of a tool conversation into the spans the loss trains and the spans it
masks.

Which template shape llama.cpp recognises: llama-server --jinja builds its reply
parser from the template itself (common/chat.cpp common_chat_templates_apply_jinja,
then common/chat-diff-analyzer.cpp analyze_tools): it renders an assistant turn with
and without `tool_calls` and reads the markers around the JSON call from the
difference, so the template must render `message.tool_calls` (function.name,
function.arguments as an object) and use `tools[i].function.name`
(common/jinja/caps.cpp caps_get, supports_tools / supports_tool_calls). The
ChatML file renders calls exactly as Qwen2.5's template does, which llama.cpp's
tests/test-chat.cpp parses into OpenAI tool_calls; the R1 file keeps the line
that common/chat-diff-analyzer.cpp's "DeepSeek-R1-Distill-Qwen" workaround looks
for, which sets the R1 tool-call tokens as the markers.
"""
from __future__ import annotations

import json
import re
from importlib import resources
from typing import Callable

from fintune.errors import UsageError
from fintune.registry import Registry

TOOL_FILES = {"chatml": "chatml_tools.jinja", "deepseek-r1": "deepseek_r1_tools.jinja",
              "llama3": "llama3_tools.jinja"}


def template_source(family_name: str) -> str | None:
    """The family's tools-aware Jinja template as shipped in this package, or None."""
    name = TOOL_FILES.get(family_name)
    if name is None:
        return None
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def tools_template(family_name: str, own_template: str) -> str | None:
    """The full template for a model of this family made from its own template: the
    shipped file with what it keeps of the model's own, the system prompt it inserts
    when none is given (SmolLM2 has one) and whether its generation prompt opens the
    reasoning block (the current DeepSeek-R1 one does)."""
    src = template_source(family_name)
    if src is None:
        return None
    if family_name == "deepseek-r1":
        opens = "<\uff5cAssistant\uff5c><think>" in own_template
        return "{%- set opens_think = " + ("true" if opens else "false") + " -%}\n" + src
    return "{%- set default_system = " + json.dumps(default_system_prompt(own_template) or "") + " -%}\n" + src


def default_system_prompt(chat_template: str) -> str | None:
    """The system prompt a template inserts when none is given (SmolLM2 does), in the
    model's own template or in the tools-aware one made from it."""
    m = re.search(r"\{\{ *'<\|im_start\|>system\n(.*?)<\|im_end\|>", chat_template, re.S)
    if m:
        return m.group(1)
    m = re.match(r'\{%- set default_system = ("(?:[^"\\]|\\.)*") -%\}', chat_template)
    return (json.loads(m.group(1)) or None) if m else None


def renders_tools(chat_template: str | None) -> bool:
    """Whether a template lists the offered tools (reads the `tools` variable)."""
    return bool(chat_template) and re.search(r"\btools\b", chat_template) is not None


# ---- reading the calls in a reply -------------------------------------------------

ToolCallParser = Callable[[str], list[dict]]
PARSERS: Registry[ToolCallParser] = Registry("tool-call format")


def _call(name, arguments, raw: str) -> dict:
    """One call as {"name", "arguments"}; `error` set when it cannot be run."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return {"name": name, "arguments": None, "error": f"arguments are not JSON: {raw[:80]!r}"}
    if not isinstance(name, str) or not isinstance(arguments, dict):
        return {"name": name, "arguments": arguments, "error": f"not a call: {raw[:80]!r}"}
    return {"name": name, "arguments": arguments}


def _json_calls(blocks: list[str]) -> list[dict]:
    calls = []
    for raw in blocks:
        try:
            obj = json.loads(raw)
        except ValueError:
            calls.append({"name": None, "arguments": None, "error": f"not JSON: {raw[:80]!r}"})
            continue
        if not isinstance(obj, dict):
            calls.append({"name": None, "arguments": None, "error": f"not a call: {raw[:80]!r}"})
            continue
        calls.append(_call(obj.get("name"), obj.get("arguments", obj.get("parameters")), raw))
    return calls


def parse_chatml(text: str) -> list[dict]:
    """`<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`, each one."""
    return _json_calls(re.findall(r"<tool_call>\s*(.*?)\s*</tool_call>", text, re.S))


R1_CALL = re.compile("<\uff5ctool\u2581call\u2581begin\uff5c>(\\w+)<\uff5ctool\u2581sep\uff5c>(.*?)\n```(?:json)?\n(.*?)\n?```"
                     "\\s*<\uff5ctool\u2581call\u2581end\uff5c>", re.S)


def parse_deepseek_r1(text: str) -> list[dict]:
    """`<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\\n```json\\nARGS\\n```<｜tool▁call▁end｜>`."""
    return [_call(name.strip(), args, args) for _, name, args in R1_CALL.findall(text)]


def parse_llama3(text: str) -> list[dict]:
    """Llama 3.1's JSON call: the whole reply is `{"name": ..., "parameters": {...}}`."""
    body = text.strip()
    if body.startswith("<|python_tag|>"):
        body = body[len("<|python_tag|>"):]
    if not body.startswith("{"):
        return []
    return _json_calls([p for p in body.split(";") if p.strip()])


PARSERS.register("chatml", parse_chatml)
PARSERS.register("deepseek-r1", parse_deepseek_r1)
PARSERS.register("llama3", parse_llama3)


def parse_tool_calls(text: str, family_name: str = "chatml") -> list[dict]:
    """The calls in a model reply written in `family_name`'s convention, each
    {"name", "arguments"} (plus "error" when it cannot be run). An unknown family
    raises UnknownNameError listing the known ones."""
    return PARSERS.get(family_name)(text)


# ---- trained and masked spans of a conversation -------------------------------------

def segments(tokenizer, family, messages: list[dict], tools: list | None = None) -> list[tuple[str, bool]]:
    """The rendered conversation as (text, trained) spans, in order. Trained: every
    assistant turn after the last user turn (a tool conversation's calls and its
    final answer); masked: everything else, the system turn with the tool list and
    the tool results included. The spans joined are the template's own rendering."""
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    out: list[tuple[str, bool]] = []
    done = ""
    for i in range(last_user + 1, len(messages)):
        if messages[i]["role"] != "assistant":
            continue
        prompt, completion = family.split(tokenizer, messages[:i], messages[i], tools)
        if not prompt.startswith(done):
            raise UsageError("chat template renders the earlier turns differently once a later turn "
                             "follows; cannot find the spans to mask")
        out += [(prompt[len(done):], False), (completion, True)]
        done = prompt + completion
    return [(t, trained) for t, trained in out if t]
