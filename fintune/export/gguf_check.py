"""Verify a finished GGUF file: the header (fintune.gguf.read_header) with its tensor
table, tensor data present to the last byte, and what a loader relies on."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fintune.gguf import FILE_TYPES, GGUFError, read_header

__all__ = ["GGUFError", "read_header", "verify"]


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
