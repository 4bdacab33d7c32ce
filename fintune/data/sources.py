"""User files in --dataset_folder: JSONL, JSON, CSV and Parquet, read row by row.

Every problem becomes a reject with the file, line (or row) and field rather
than an exception, so one bad line never hides the rest of a file and nothing
is dropped silently. The caller counts rejects and fails the stage when there
are too many.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

EXTENSIONS = (".jsonl", ".json", ".csv", ".parquet")
# CSV cells holding a list of messages are written as JSON text
_JSON_COLUMNS = ("messages", "conversations", "prompt", "chosen", "rejected")


@dataclass
class RawRow:
    where: str                       # "file:line" or "file:row N"
    row: dict | None = None
    field: str | None = None         # set when the row could not be read
    reason: str | None = None


def user_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(files to read, files ignored because of their type). README*, hidden
    files and subfolders (e.g. eval/) are not data."""
    if not folder.is_dir():
        return [], []
    files = [p for p in sorted(folder.iterdir())
             if p.is_file() and not p.name.startswith(".") and not p.name.upper().startswith("README")]
    return [p for p in files if p.suffix.lower() in EXTENSIONS], \
        [p for p in files if p.suffix.lower() not in EXTENSIONS]


def read_rows(path: Path, max_line_bytes: int) -> Iterator[RawRow]:
    if path.stat().st_size == 0:
        yield RawRow(str(path), field="file", reason="empty file")
        return
    reader = {".jsonl": _jsonl, ".json": _json, ".csv": _csv, ".parquet": _parquet}[path.suffix.lower()]
    yield from reader(path, max_line_bytes)


def _jsonl(path: Path, max_line_bytes: int) -> Iterator[RawRow]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # UTF-8 byte-order mark, as some editors write
            if len(raw) > max_line_bytes:
                yield RawRow(where, field="line", reason=f"{len(raw):,} bytes, over max_line_bytes={max_line_bytes:,}")
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield RawRow(where, field="encoding", reason=f"not UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r})")
                continue
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                yield RawRow(where, field="json", reason=f"invalid JSON ({e.msg} at column {e.colno})")
                continue
            if not isinstance(row, dict):
                yield RawRow(where, field="json", reason=f"expected an object, got {type(row).__name__}")
                continue
            yield RawRow(where, row)


def _json(path: Path, max_line_bytes: int) -> Iterator[RawRow]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        yield RawRow(str(path), field="encoding", reason=f"not UTF-8 (byte {e.start})")
        return
    except json.JSONDecodeError as e:
        yield RawRow(f"{path}:{e.lineno}", field="json", reason=f"invalid JSON ({e.msg} at column {e.colno})")
        return
    if isinstance(data, dict):  # {"data": [...]} / {"rows": [...]}, as some exports write
        data = next((v for k, v in data.items() if k in ("data", "rows", "train") and isinstance(v, list)), None)
    if not isinstance(data, list):
        yield RawRow(str(path), field="json", reason="expected a list of objects (or {\"data\": [...]})")
        return
    for i, row in enumerate(data):
        where = f"{path}:row {i}"
        if isinstance(row, dict):
            yield RawRow(where, row)
        else:
            yield RawRow(where, field="json", reason=f"expected an object, got {type(row).__name__}")


def _table_rows(path: Path, records: list[dict], first_row: int) -> Iterator[RawRow]:
    for i, rec in enumerate(records):
        row, bad = {}, None
        for k, v in rec.items():
            v = _plain(v)
            if k in _JSON_COLUMNS and isinstance(v, str) and v.lstrip().startswith("["):
                try:
                    v = json.loads(v)
                except json.JSONDecodeError as e:
                    bad = (k, f"cell is not valid JSON ({e.msg})")
            row[k] = v
        where = f"{path}:row {i + first_row}"
        yield RawRow(where, field=bad[0], reason=bad[1]) if bad else RawRow(where, row)


def _csv(path: Path, max_line_bytes: int) -> Iterator[RawRow]:
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        yield RawRow(str(path), field="encoding", reason=f"not UTF-8 (byte {e.start})")
        return
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        yield RawRow(str(path), field="csv", reason=f"unreadable CSV ({str(e).strip()})")
        return
    # line numbers as a spreadsheet shows them: the header is line 1
    yield from _table_rows(path, frame.to_dict("records"), first_row=2)


def _parquet(path: Path, max_line_bytes: int) -> Iterator[RawRow]:
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for damaged files
        yield RawRow(str(path), field="parquet", reason=f"unreadable Parquet ({type(e).__name__}: {e})")
        return
    yield from _table_rows(path, frame.to_dict("records"), first_row=0)


def _plain(v: Any) -> Any:
    """numpy arrays / scalars from Parquet -> plain Python lists, dicts, numbers."""
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v
