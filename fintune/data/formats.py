"""User data formats, detected per file from its rows' keys (or named in the
config), each converted to the one output schema.

A converter gets one row and returns a ``Converted`` (chat ``messages`` for SFT,
``text`` for plain-text samples, and for preference pairs also the DPO triple)
or raises RowError naming the field at fault; the caller records file and line.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from fintune.registry import Registry

ROLES = ("system", "user", "assistant")


class RowError(ValueError):
    def __init__(self, field: str, reason: str):
        super().__init__(f"field {field!r}: {reason}")
        self.field, self.reason = field, reason


@dataclass
class Converted:
    messages: list[dict] | None = None  # SFT conversation ending with the assistant
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


def check_messages(messages, field: str = "messages") -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise RowError(field, "must be a non-empty list of messages")
    out = []
    for i, m in enumerate(messages):
        where = f"{field}[{i}]"
        if not isinstance(m, dict):
            raise RowError(where, "must be an object with role and content")
        role = m.get("role")
        if role not in ROLES:
            raise RowError(f"{where}.role", f"unknown role {role!r}; valid: {', '.join(ROLES)}")
        content = m.get("content")
        if not isinstance(content, str):
            raise RowError(f"{where}.content", f"must be a string, got {type(content).__name__}")
        if not content.strip():
            raise RowError(f"{where}.content", "empty")
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "assistant":
        raise RowError(field, "conversation must end with an assistant message")
    if not any(m["role"] == "user" for m in out):
        raise RowError(field, "conversation has no user message")
    return out


def _openai(row):
    return Converted(messages=check_messages(row.get("messages"), "messages"))


SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system"}


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
        msgs.append({"role": SHAREGPT_ROLES[src], "content": turn.get("value")})
    return Converted(messages=check_messages(msgs, "conversations"))


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
