"""User data formats, detected per row's keys, each converted to chat messages.

A converter gets one row and returns ``messages`` or raises RowError naming the
field at fault; the caller records the file and line.
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
class Format:
    name: str
    keys: tuple[str, ...]  # keys whose presence identifies the format
    convert: Callable[[dict], list[dict]]
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
    return check_messages(row.get("messages"), "messages")


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
    return check_messages(msgs, "conversations")


def _alpaca(row):
    instruction = _text(row, "instruction")
    extra = _text(row, "input", required=False)
    output = _text(row, "output")
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]


FORMATS.register("messages", Format("messages", ("messages",), _openai,
                                    '{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}'))
FORMATS.register("sharegpt", Format("sharegpt", ("conversations",), _sharegpt,
                                    '{"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", "value": "..."}]}'))
FORMATS.register("alpaca", Format("alpaca", ("instruction", "output"), _alpaca,
                                  '{"instruction": "...", "input": "", "output": "..."}'))


def detect(row: dict) -> Format | None:
    for _, fmt in FORMATS.items():
        if all(k in row for k in fmt.keys):
            return fmt
    return None
