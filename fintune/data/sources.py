"""User files in --dataset_folder: JSONL, JSON, CSV and Parquet, read row by row.

Every problem becomes a reject with the file, line (or row) and field rather
than an exception, so one bad line never hides the rest of a file and nothing
is dropped silently. The parsers are third-party code (json, csv, pyarrow) that
raise many exception types on odd input (RecursionError on deep nesting,
ValueError on a 5,000-digit integer, OSError on a damaged Parquet footer): each
call is fenced per line, row or row group, and what it raises is that unit's
reject. The caller counts rejects and fails the stage when there are too many.

Where: ``file:N`` is a line number (JSONL, CSV: where the record starts, the
header being line 1); ``file:row N`` a position (JSON arrays, Parquet, from 0).
"""
from __future__ import annotations

import contextlib
import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from fintune.jsonl import LineError, loads

EXTENSIONS = (".jsonl", ".json", ".csv", ".parquet")
# CSV cells holding a list of messages are written as JSON text
_JSON_COLUMNS = ("messages", "conversations", "prompt", "chosen", "rejected")
# What a file that yields no row at all holds, by type (empty files are caught first)
NO_ROWS = {".jsonl": "only blank lines", ".json": "an empty list", ".csv": "a header and no data rows",
           ".parquet": "no rows"}


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
    """Every row of one file, read or rejected. A file that cannot be opened is
    one reject naming it (field "file")."""
    reader = {".jsonl": _jsonl, ".json": _json, ".csv": _csv, ".parquet": _parquet}[path.suffix.lower()]
    try:
        if path.stat().st_size == 0:
            yield RawRow(str(path), field="file", reason="empty file")
            return
        yield from reader(path, max_line_bytes)
    except OSError as e:  # permissions, a file removed while reading, an I/O error
        yield RawRow(str(path), field="file", reason=f"cannot read ({type(e).__name__}: {e.strerror or e})")


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
            yield _object_row(where, text)


def _object_row(where: str, text: str) -> RawRow:
    try:
        row = loads(text)
    except LineError as e:
        return RawRow(where, field=e.field, reason=e.reason)
    if not isinstance(row, dict):
        return RawRow(where, field="json", reason=f"expected an object, got {type(row).__name__}")
    return RawRow(where, row)


def _json(path: Path, max_line_bytes: int) -> Iterator[RawRow]:
    """A JSON file is parsed whole, so what breaks the parse breaks the file:
    one reject naming it; each element is then checked on its own."""
    try:
        data = loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        yield RawRow(str(path), field="encoding", reason=f"not UTF-8 (byte {e.start})")
        return
    except LineError as e:
        yield RawRow(str(path), field=e.field, reason=e.reason)
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


@contextlib.contextmanager
def _csv_field_limit(limit: int):
    # the csv module's limit is process-wide; a cell past max_line_bytes is that row's reject
    old = csv.field_size_limit()
    csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _csv(path: Path, max_line_bytes: int) -> Iterator[RawRow]:
    """Record by record with the csv module, so a row the parser chokes on
    (a cell over the size limit, a stray quote) or whose field count differs
    from the header's is that row's reject, not the file's. Bytes that are not
    UTF-8 are kept as surrogates and reject only the rows holding them."""
    text = path.read_bytes().decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = None
    with _csv_field_limit(max_line_bytes):
        while True:
            start = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                yield RawRow(f"{path}:{start}", field="csv", reason=f"unparseable CSV record ({e})")
                continue
            if not cells:
                continue  # blank line
            where = f"{path}:{start}"
            bad = next((c for c in cells if _has_raw_bytes(c)), None)
            if bad is not None:
                raw = next(ch for ch in bad if 0xDC80 <= ord(ch) <= 0xDCFF)
                yield RawRow(where if header else str(path), field="encoding",
                             reason=f"not UTF-8 (byte {bytes([ord(raw) - 0xDC00])!r})")
                if header is None:
                    return
                continue
            if header is None:
                header = cells
                continue
            if len(cells) != len(header):
                yield RawRow(where, field="csv", reason=f"{len(cells)} fields, the header has {len(header)} "
                             "(an unquoted comma or a missing cell?)")
                continue
            yield _table_row(where, dict(zip(header, cells)))


def _has_raw_bytes(cell: str) -> bool:
    return any(0xDC80 <= ord(ch) <= 0xDCFF for ch in cell)


def _table_row(where: str, rec: dict) -> RawRow:
    row = {}
    for k, v in rec.items():
        if k in _JSON_COLUMNS and isinstance(v, str) and v.lstrip().startswith("["):
            try:
                v = loads(v, field=k)
            except LineError as e:
                return RawRow(where, field=e.field, reason=f"cell is not valid JSON: {e.reason}")
        row[k] = v
    return RawRow(where, row)


def _parquet(path: Path, max_line_bytes: int) -> Iterator[RawRow]:
    """Row group by row group. A group that cannot be read rejects each of its
    rows; a group that reads but whose values do not convert to Python (a
    timestamp past year 9999, say) is converted row by row, so only the rows
    that fail are rejected, each naming its column."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for a damaged file
        yield RawRow(str(path), field="parquet", reason=f"unreadable Parquet ({type(e).__name__}: {e})")
        return
    first = 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        try:
            table = pf.read_row_group(g)
        except Exception as e:  # a damaged or mistyped column chunk
            reason = f"row group {g} unreadable ({type(e).__name__}: {str(e)[:200]})"
            for i in range(first, first + n):
                yield RawRow(f"{path}:row {i}", field="parquet", reason=reason)
        else:
            yield from _parquet_group(path, table, first)
        first += n


def _parquet_group(path: Path, table, first: int) -> Iterator[RawRow]:
    try:
        records = table.to_pylist()
    except Exception:  # conversion to Python failed somewhere in the group: find the rows
        records = None
    for i in range(table.num_rows):
        where = f"{path}:row {first + i}"
        if records is not None:
            yield _table_row(where, records[i])
            continue
        rec = {}
        for name in table.column_names:
            try:
                rec[name] = table.column(name)[i].as_py()
            except Exception as e:
                yield RawRow(where, field=name, reason=f"value cannot be read ({type(e).__name__}: {str(e)[:160]})")
                break
        else:
            yield _table_row(where, rec)
