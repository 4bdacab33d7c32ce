"""GGUF headers, read without gguf-py, and the size of each llama.cpp type.

``read_header`` parses the key-value section on its own, so it works on files
whose tensor data is cut off (gguf-py's GGUFReader refuses those). The export
stage verifies files with it, the eval reads chat templates and BOS tokens, the
plan sizes files by the bits per weight of each type.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

from fintune.errors import FintuneError
from fintune.registry import Registry

# general.file_type of each type the export writes (llama.cpp's llama_ftype)
FILE_TYPES = {"F32": 0, "F16": 1, "Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18, "BF16": 32}
# bits per weight of each llama.cpp type, for sizing a GGUF before it exists
GGUF_BITS = {"F32": 32, "F16": 16, "BF16": 16, "Q8_0": 8.5, "Q6_K": 6.56, "Q5_K_M": 5.69, "Q5_K_S": 5.54,
             "Q5_0": 5.5, "Q4_K_M": 4.85, "Q4_K_S": 4.58, "Q4_0": 4.55, "Q3_K_M": 3.91, "Q3_K_S": 3.5,
             "Q2_K": 2.63, "IQ4_XS": 4.25}
UNKNOWN_GGUF_BITS = 8.5          # a type not listed: sized as Q8_0, the larger side
# the types a run may ask for where llama-quantize is not there to list its own (the plan, the preflight)
QUANT_TYPES: Registry[float] = Registry("quantization type")
for _name, _bits in GGUF_BITS.items():
    QUANT_TYPES.register(_name, _bits)


def bits_per_weight(qtype: str) -> float:
    return GGUF_BITS.get(qtype.upper(), UNKNOWN_GGUF_BITS)


# gguf value types (GGUF spec): uint8 .. float64, bool, string, array
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


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
