"""Read and verify GGUF files.

``read_header`` parses the key-value section on its own, so it works on files
whose tensor data is cut off (gguf-py's GGUFReader refuses those); ``verify``
adds the tensor table and checks what a loader relies on.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

from fintune.errors import FintuneError

# gguf value types (GGUF spec): uint8 .. float64, bool, string, array
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
FILE_TYPES = {"F32": 0, "F16": 1, "Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18, "BF16": 32}


class GGUFError(FintuneError, ValueError):
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


def read_header(path: str | Path, skip_arrays: bool = True, tensors: bool = False) -> dict[str, Any]:
    """Key-value metadata of a GGUF file, plus '__tensor_count__' (and, with
    tensors=True, '__tensors__': (name, shape, ggml type, offset) and
    '__data_start__')."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise GGUFError(f"{path}: not a GGUF file")
        version = _read(f, "<I")
        n_tensors, n_kv = _read(f, "<Q"), _read(f, "<Q")
        out: dict[str, Any] = {"__version__": version, "__tensor_count__": n_tensors}
        for _ in range(n_kv):
            key = _value(f, _STRING, skip_arrays)
            out[key] = _value(f, _read(f, "<I"), skip_arrays)
        if tensors:
            infos = []
            for _ in range(n_tensors):
                name = _value(f, _STRING, True)
                shape = [_read(f, "<Q") for _ in range(_read(f, "<I"))]
                infos.append((name, shape, _read(f, "<I"), _read(f, "<Q")))
            align = int(out.get("general.alignment", 32))
            out["__tensors__"] = infos
            out["__data_start__"] = -(-f.tell() // align) * align
    return out


def _tensor_bytes(shape: list[int], ggml_type: int) -> int:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    n = 1
    for d in shape:
        n *= d
    return n // block * size


def verify(path: str | Path, expect_file_type: str | None = None) -> dict[str, Any]:
    """Check a finished GGUF: tensor data present to the last byte, and the
    metadata Ollama and llama.cpp need. Returns a summary; raises GGUFError.

    The header is parsed here with gguf-py's type tables rather than by
    GGUFReader, which builds a view per vocabulary entry: 3.5-4.4 s per
    135M-parameter file against 0.1 s here (measured).
    """
    path = Path(path)
    try:
        kv = read_header(path, tensors=True)
        end = max((off + _tensor_bytes(shape, t) for _, shape, t, off in kv["__tensors__"]), default=0)
    except (GGUFError, ValueError, KeyError) as e:
        raise GGUFError(f"{path}: unreadable GGUF ({e})") from None
    end += kv["__data_start__"]
    size = path.stat().st_size
    if end > size:
        raise GGUFError(f"{path}: truncated (tensor data ends at {end}, file has {size} bytes)")
    arch = kv.get("general.architecture")
    summary = {"path": str(path), "architecture": arch, "tensors": kv["__tensor_count__"],
               "file_type": kv.get("general.file_type"), "pre": kv.get("tokenizer.ggml.pre"),
               "has_chat_template": bool(kv.get("tokenizer.chat_template"))}
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
