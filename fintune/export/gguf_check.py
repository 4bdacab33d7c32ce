"""Read and verify GGUF files.

``read_header`` parses the key-value section on its own, so it works on files
whose tensor data is cut off (gguf-py's GGUFReader refuses those); ``verify``
uses GGUFReader on complete files and checks what a loader relies on.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

# gguf value types (GGUF spec): uint8 .. float64, bool, string, array
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
FILE_TYPES = {"F32": 0, "F16": 1, "Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18, "BF16": 32}


class GGUFError(ValueError):
    pass


def _read(f: BinaryIO, fmt: str):
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise GGUFError("file ends inside the header")
    return struct.unpack(fmt, data)[0]


def _value(f: BinaryIO, vtype: int, skip_arrays: bool):
    if vtype in _SCALARS:
        return _read(f, _SCALARS[vtype])
    if vtype == _STRING:
        n = _read(f, "<Q")
        raw = f.read(n)
        if len(raw) != n:
            raise GGUFError("file ends inside the header")
        return raw.decode("utf-8", errors="replace")
    if vtype == _ARRAY:
        etype, n = _read(f, "<I"), _read(f, "<Q")
        if skip_arrays and etype in _SCALARS:
            f.seek(struct.calcsize(_SCALARS[etype]) * n, 1)
            return f"<array of {n}>"
        return [_value(f, etype, skip_arrays) for _ in range(n)]
    raise GGUFError(f"unknown value type {vtype}")


def read_header(path: str | Path, skip_arrays: bool = True) -> dict[str, Any]:
    """Key-value metadata of a GGUF file, plus '__tensor_count__'."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise GGUFError(f"{path}: not a GGUF file")
        version = _read(f, "<I")
        n_tensors, n_kv = _read(f, "<Q"), _read(f, "<Q")
        out: dict[str, Any] = {"__version__": version, "__tensor_count__": n_tensors}
        for _ in range(n_kv):
            key = _value(f, _STRING, skip_arrays)
            out[key] = _value(f, _read(f, "<I"), skip_arrays)
    return out


def verify(path: str | Path, expect_file_type: str | None = None) -> dict[str, Any]:
    """Check a finished GGUF: readable to the last tensor, and carrying the
    metadata Ollama and llama.cpp need. Returns a summary; raises GGUFError."""
    from gguf import GGUFReader

    path = Path(path)
    try:
        reader = GGUFReader(path)
    except Exception as e:  # gguf-py raises plain ValueError/struct errors on damage
        raise GGUFError(f"{path}: unreadable GGUF ({e})") from None
    kv = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.") or
          k in ("tokenizer.ggml.pre", "tokenizer.ggml.model", "tokenizer.ggml.eos_token_id")}
    arch = kv.get("general.architecture")
    summary = {"path": str(path), "architecture": arch, "tensors": len(reader.tensors),
               "file_type": kv.get("general.file_type"), "pre": kv.get("tokenizer.ggml.pre"),
               "has_chat_template": bool(kv.get("tokenizer.chat_template"))}
    end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
    if end > path.stat().st_size:
        raise GGUFError(f"{path}: truncated (tensor data ends at {end}, file has {path.stat().st_size} bytes)")
    problems = []
    if not arch:
        problems.append("no general.architecture")
    if not summary["tensors"]:
        problems.append("no tensors")
    if not summary["pre"]:
        problems.append("tokenizer.ggml.pre not set")
    if not summary["has_chat_template"]:
        problems.append("no tokenizer.chat_template")
    if expect_file_type and summary["file_type"] != FILE_TYPES.get(expect_file_type):
        problems.append(f"file type {summary['file_type']}, expected {expect_file_type} "
                        f"({FILE_TYPES.get(expect_file_type)})")
    if problems:
        raise GGUFError(f"{path}: " + "; ".join(problems))
    return summary
