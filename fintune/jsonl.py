"""Small JSON helpers: atomic writes, and reads that name the file and line."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Iterator

from fintune.errors import FintuneError
from fintune.manifest import atomic_path


class DataError(FintuneError, ValueError):
    """Bad input data; the message names the file, line and field."""


class LineError(ValueError):
    """One unit of input (a line, a cell) cannot be read; the caller adds where."""

    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field, self.reason = field, reason


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise LineError("json", f"number {text[:40]} is outside the float range")
    return v


def _no_constant(name: str):
    raise LineError("json", f"{name} is not a JSON number")


def loads(text: str, field: str = "json") -> Any:
    """json.loads where anything the parser raises is a LineError(field, reason):
    invalid JSON, nesting deeper than the recursion limit, integers past
    Python's digit limit, numbers outside float range, NaN/Infinity, and text
    that is not valid Unicode (a lone surrogate from a \\ud800 escape, which
    could not be written back out as UTF-8)."""
    try:
        value = json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
    except LineError as e:
        raise LineError(field, e.reason) from None
    except json.JSONDecodeError as e:
        raise LineError(field, f"invalid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise LineError(field, "JSON nested too deeply to parse (RecursionError)") from None
    except (ValueError, OverflowError, MemoryError) as e:  # e.g. "Exceeds the limit (4300 digits)"
        raise LineError(field, f"unreadable JSON ({type(e).__name__}: {str(e)[:160]})") from None
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        raise LineError(field, f"not valid Unicode ({e.reason})") from None
    return value


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    for _, row in read_jsonl_numbered(path):
        yield row


def read_jsonl_numbered(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; bad lines raise DataError naming file and line."""
    path = Path(path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not UTF-8 (byte {e.start})") from None
            if not line.strip():
                continue
            try:
                row = loads(line)
            except LineError as e:
                raise DataError(f"{path}:{lineno}: {e.reason}") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row
