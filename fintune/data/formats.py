"""User data formats, detected per file from its rows' keys (or named in the
config), each converted to the one output schema.

A converter gets one row and returns a ``Converted`` (chat ``messages`` for SFT,
``text`` for plain-text samples, and for preference pairs also the DPO triple)
or raises RowError naming the field at fault; the caller records file and line.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from fintune.registry import Registry

ROLES = ("system", "user", "assistant", "tool")


class RowError(ValueError):
    def __init__(self, field: str, reason: str):
        super().__init__(f"field {field!r}: {reason}")
        self.field, self.reason = field, reason


@dataclass
class Converted:
    messages: list[dict] | None = None  # SFT conversation ending with the assistant
    tools: list[dict] | None = None     # the tools the conversation offers (OpenAI function schemas)
    text: str | None = None             # plain-text sample: every token trained
    dpo: dict | None = None             # {"prompt": [...], "chosen": [...], "rejected": [...]}


@dataclass
class Format:
    name: str
    keys: tuple[str, ...]  # keys whose presence identifies the format
    convert: Callable[[dict], Converted]
    example: str


FORMATS: Registry[Format] = Registry("dataset format")


def _text(row: dict, key: str, *, required: bool = True) -> str:
    if key not in row or row[key] is None:
        if required:
            raise RowError(key, "missing")
        return ""
    v = row[key]
    if not isinstance(v, str):
        raise RowError(key, f"must be a string, got {type(v).__name__}")
    if required and not v.strip():
        raise RowError(key, "empty")
    return v


def check_messages(messages, field: str = "messages", tools: list[dict] | None = None) -> list[dict]:
    """Chat messages, checked: known roles, text content, an assistant turn last and a
    user turn somewhere; OpenAI tool turns (assistant `tool_calls`, `tool` results
    answering them) where `tools` lists the functions called."""
    if not isinstance(messages, list) or not messages:
        raise RowError(field, "must be a non-empty list of messages")
    out, pending = [], 0  # tool results still owed to the last call turn
    for i, m in enumerate(messages):
        where = f"{field}[{i}]"
        if not isinstance(m, dict):
            raise RowError(where, "must be an object with role and content")
        role = m.get("role")
        if role not in ROLES:
            raise RowError(f"{where}.role", f"unknown role {role!r}; valid: {', '.join(ROLES)}")
        calls = _tool_calls(m.get("tool_calls"), where, tools) if role == "assistant" else None
        content = m.get("content")
        if calls and content is None:
            content = ""
        if not isinstance(content, str):
            raise RowError(f"{where}.content", f"must be a string, got {type(content).__name__}")
        if not content.strip() and not calls:
            raise RowError(f"{where}.content", "empty")
        if role == "tool" and not pending:
            raise RowError(f"{where}.role", "a tool result with no tool call before it to answer")
        if role != "tool" and pending:
            raise RowError(where, f"{pending} tool call(s) of the turn before have no tool result")
        pending = len(calls) if calls else pending - (role == "tool")
        out.append({"role": role, "content": content, **({"tool_calls": calls} if calls else {})})
    if out[-1]["role"] != "assistant":
        raise RowError(field, "conversation must end with an assistant message")
    if not any(m["role"] == "user" for m in out):
        raise RowError(field, "conversation has no user message")
    return out


def _tool_calls(calls, where: str, tools: list[dict] | None) -> list[dict] | None:
    """An assistant turn's OpenAI tool calls, each {"type": "function", "function":
    {"name", "arguments": object}}: arguments given as JSON text are parsed, so every
    call renders the same way in the chat template."""
    if calls is None or calls == []:
        return None
    if not isinstance(calls, list):
        raise RowError(f"{where}.tool_calls", f"must be a list, got {type(calls).__name__}")
    names = {t["function"]["name"] for t in tools or []}
    out = []
    for j, call in enumerate(calls):
        at = f"{where}.tool_calls[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            raise RowError(f"{at}.function", "missing: a call is {\"type\": \"function\", \"function\": "
                           "{\"name\": ..., \"arguments\": ...}}")
        name = fn.get("name")
        if not isinstance(name, str) or not name.strip():
            raise RowError(f"{at}.function.name", "must be a non-empty string")
        if not tools:
            raise RowError("tools", f"{at} calls {name!r} but the row lists no tools")
        if name not in names:
            raise RowError(f"{at}.function.name", f"{name!r} is not among the row's tools ({', '.join(sorted(names))})")
        out.append({"type": "function", "function": {"name": name,
                                                     "arguments": _arguments(fn.get("arguments"), at)}})
    return out


def _arguments(args, at: str) -> dict:
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError as e:
            raise RowError(f"{at}.function.arguments", f"not valid JSON ({e})") from None
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise RowError(f"{at}.function.arguments", f"must be a JSON object, got {type(args).__name__}")
    return args


def check_tools(tools, field: str = "tools") -> list[dict] | None:
    """A row's tool list as OpenAI function schemas, {"type": "function", "function":
    {"name", ...}}; a bare {"name", "description", "parameters"} (LLaMA-Factory's
    ShareGPT) is wrapped. Given as JSON text, it is parsed first."""
    if tools is None or tools == [] or tools == "":
        return None
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except ValueError as e:
            raise RowError(field, f"not valid JSON ({e})") from None
    if not isinstance(tools, list):
        raise RowError(field, f"must be a list of tools, got {type(tools).__name__}")
    out = []
    for k, tool in enumerate(tools):
        fn = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"].strip():
            raise RowError(f"{field}[{k}].function.name", "missing: a tool is {\"type\": \"function\", "
                           "\"function\": {\"name\": ..., \"parameters\": {...}}}")
        if "parameters" in fn and not isinstance(fn["parameters"], dict):
            raise RowError(f"{field}[{k}].function.parameters", "must be a JSON schema object")
        out.append({"type": "function", "function": fn})
    return out


def _openai(row):
    tools = check_tools(row.get("tools"))
    return Converted(messages=check_messages(row.get("messages"), "messages", tools), tools=tools)


SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "function_call": "assistant", "observation": "tool"}


def _sharegpt(row):
    conv = row.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise RowError("conversations", "must be a non-empty list")
    msgs = []
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict):
            raise RowError(f"conversations[{i}]", "must be an object with from and value")
        src = turn.get("from")
        if src not in SHAREGPT_ROLES:
            raise RowError(f"conversations[{i}].from",
                           f"unknown role {src!r}; valid: {', '.join(SHAREGPT_ROLES)}")
        if src == "function_call":
            msgs.append({"role": "assistant", "content": "",
                         "tool_calls": _sharegpt_calls(turn.get("value"), f"conversations[{i}].value")})
        else:
            msgs.append({"role": SHAREGPT_ROLES[src], "content": turn.get("value")})
    tools = check_tools(row.get("tools"))
    return Converted(messages=check_messages(msgs, "conversations", tools), tools=tools)


def _sharegpt_calls(value, field: str) -> list[dict]:
    """A `function_call` turn's value: JSON text of {"name", "arguments"} or a list of them."""
    try:
        calls = json.loads(value) if isinstance(value, str) else value
    except ValueError as e:
        raise RowError(field, f"not valid JSON ({e})") from None
    calls = calls if isinstance(calls, list) else [calls]
    if not calls or not all(isinstance(c, dict) for c in calls):
        raise RowError(field, 'must be {"name": ..., "arguments": {...}} or a list of them')
    return [{"type": "function", "function": {"name": c.get("name"), "arguments": c.get("arguments")}}
            for c in calls]


def _alpaca(row):
    instruction = _text(row, "instruction")
    extra = _text(row, "input", required=False)
    output = _text(row, "output")
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return Converted(messages=[{"role": "user", "content": prompt}, {"role": "assistant", "content": output}])


def _turns(value, field: str, default_role: str) -> list[dict]:
    """A preference field: a string (one turn of default_role) or a message list."""
    if isinstance(value, str):
        if not value.strip():
            raise RowError(field, "empty")
        return [{"role": default_role, "content": value}]
    if not isinstance(value, list) or not value:
        raise RowError(field, f"must be a string or a non-empty list of messages, got {type(value).__name__}")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise RowError(f"{field}[{i}].role", f"unknown role {m.get('role') if isinstance(m, dict) else m!r}; "
                           f"valid: {', '.join(ROLES)}")
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            raise RowError(f"{field}[{i}].content", "must be a non-empty string")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _preference(row):
    prompt = _turns(row.get("prompt"), "prompt", "user")
    if prompt[-1]["role"] == "assistant":
        raise RowError("prompt", "must not end with an assistant message")
    chosen = _turns(row.get("chosen"), "chosen", "assistant")
    rejected = _turns(row.get("rejected"), "rejected", "assistant")
    for name, reply in (("chosen", chosen), ("rejected", rejected)):
        if reply[-1]["role"] != "assistant":
            raise RowError(name, "must end with an assistant message")
    if chosen == rejected:
        raise RowError("rejected", "identical to chosen: the pair teaches nothing")
    return Converted(messages=check_messages(prompt + chosen[-1:], "chosen"),
                     dpo={"prompt": prompt, "chosen": chosen[-1:], "rejected": rejected[-1:]})


def _plain_text(row):
    return Converted(text=_text(row, "text"))


FORMATS.register("messages", Format("messages", ("messages",), _openai,
                                    '{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}'))
FORMATS.register("sharegpt", Format("sharegpt", ("conversations",), _sharegpt,
                                    '{"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", "value": "..."}]}'))
FORMATS.register("alpaca", Format("alpaca", ("instruction", "output"), _alpaca,
                                  '{"instruction": "...", "input": "", "output": "..."}'))
FORMATS.register("preference", Format("preference", ("prompt", "chosen", "rejected"), _preference,
                                      '{"prompt": "...", "chosen": "...", "rejected": "..."}'))
FORMATS.register("text", Format("text", ("text",), _plain_text, '{"text": "..."}'))


def describe_formats() -> str:
    return "; ".join(f"{f.name} (keys {', '.join(f.keys)})" for _, f in FORMATS.items())


def detect(row: dict) -> Format | None:
    for _, fmt in FORMATS.items():
        if all(k in row for k in fmt.keys):
            return fmt
    return None
