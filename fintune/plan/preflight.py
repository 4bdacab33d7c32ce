"""What the stages of a run will need, checked before the first one starts: llama.cpp's
tools present and runnable and the quantization types known (export, eval), the
output folders writable, the eval files there, and the base model's folder, or its
hub entry cached or downloadable. A mistake that only the export or the eval would
have found, after hours of training, stops the run at once, every problem listed
together. `fintune plan` prints the same verdicts.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fintune import models
from fintune.config import EMBEDDED_BASE, field_default
from fintune.errors import FintuneError
from fintune.gguf import QUANT_TYPES
from fintune.llama_cpp import SETUP_HINT, LlamaCpp, LlamaCppError
from fintune.registry import UnknownNameError

# the stages that need llama.cpp's tools: export makes the GGUF files, eval runs them
LLAMA_CPP_STAGES = {"export", "eval"}
# the stages that load the base model
BASE_STAGES = {"train", "grpo", "merge"}


class PreflightError(FintuneError):
    """One or more things a later stage needs are missing; the message lists them all."""


@dataclass
class Check:
    what: str
    problem: str | None = None  # None: ready
    note: str = ""


def output_paths(cfg) -> dict[str, list[tuple[str, str]]]:
    """Per stage, (setting, path) of what it writes."""
    e = cfg.export
    return {"data": [("data_dir", cfg.data.data_dir)],
            "train": [("lora_output_dir", cfg.train.lora_output_dir), ("checkpoint_dir", cfg.train.checkpoint_dir)],
            "grpo": [("checkpoint_dir", cfg.train.checkpoint_dir)],
            "merge": [("merged_model_dir", e.merged_model_dir)],
            "export": [("gguf_f16_path", str(e.unquantized_gguf)), ("modelfile_path", e.modelfile_path)]
            + [("quant_types", str(e.gguf_path(q))) for q in e.quant_types],
            "eval": [("eval_dir", cfg.eval.eval_dir)]}


def unwritable(path: str | Path) -> str | None:
    """Why `path` cannot be created or replaced, or None: its nearest existing folder
    must be a folder this user may write in."""
    p = Path(path).expanduser().absolute()
    while not p.exists():
        p = p.parent
    if not p.is_dir() and p != Path(path).expanduser().absolute():
        return f"{p} is a file, not a folder"
    folder = p if p.is_dir() else p.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder} is not writable"
    return None


def check_outputs(cfg, stages: list[str]) -> list[Check]:
    out = []
    for stage in stages:
        for setting, path in output_paths(cfg).get(stage, []):
            why = unwritable(path)
            out.append(Check(f"output {path} ({stage})", f"{setting} {path}: {why}" if why else None))
    return out


def check_llama_cpp(cfg) -> list[Check]:
    """The tools present and runnable (llama-quantize lists its types), and every
    quantization type known to them; without them, known to the registry."""
    lc = LlamaCpp(Path(cfg.export.llama_cpp_path))
    types = cfg.export.quant_types
    try:
        lc.preflight()
    except LlamaCppError as e:
        return [Check("llama.cpp tools", str(e)), *(_known_to_registry(q) for q in types)]
    try:
        proc = subprocess.run([str(lc.binary("llama-quantize")), "--help"], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [Check("llama.cpp tools", f"llama-quantize does not run here ({e}); "
                                         + SETUP_HINT.format(root=lc.root))]
    known = lc.quant_types()
    if not known:
        return [Check("llama.cpp tools", f"llama-quantize does not run here (exit {proc.returncode}: "
                      f"{(proc.stderr or proc.stdout).strip()[-200:]}); " + SETUP_HINT.format(root=lc.root))]
    checks = [Check("llama.cpp tools", note=f"{lc.root}, {lc.version()}")]
    for q in types:
        checks.append(Check(f"quant type {q}", None if q in known else
                            f"export.quant_types: unknown quantization type {q!r}; llama-quantize knows: "
                            f"{', '.join(known)}"))
    return checks


def _known_to_registry(qtype: str) -> Check:
    try:
        QUANT_TYPES.get(qtype)
        return Check(f"quant type {qtype}")
    except UnknownNameError as e:
        return Check(f"quant type {qtype}", f"export.quant_types: {e}")


def check_eval_files(cfg) -> list[Check]:
    """Each eval file there; the shipped default's set is optional (a clone may lack it)."""
    default = cfg.eval.eval_files == field_default("eval_files")
    out = []
    for f in cfg.eval.eval_files:
        if Path(f).is_file():
            out.append(Check(f"eval file {f}"))
        elif default:
            out.append(Check(f"eval file {f}", note="not found: left out of the eval (the default set)"))
        else:
            out.append(Check(f"eval file {f}", f"eval.eval_files: {f}: no such file"))
    return out


def check_base_model(cfg) -> Check:
    name = cfg.model.base_model
    try:
        if name == EMBEDDED_BASE:
            models.smollm2_gguf_path()
        else:
            models.resolve_base_model(name)
    except FintuneError as e:
        return Check(f"base model {name}", str(e))
    return Check(f"base model {name}")


def checks(cfg, stages: list[str]) -> list[Check]:
    """Every check the stages in `stages` (those that will run) need."""
    out = []
    if BASE_STAGES & set(stages):
        out.append(check_base_model(cfg))
    if LLAMA_CPP_STAGES & set(stages):
        out += check_llama_cpp(cfg)
    if "eval" in stages:
        out += check_eval_files(cfg)
    return out + check_outputs(cfg, stages)


def require_ready(cfg, stages: list[str]) -> None:
    """Stop before the first stage when anything a later one needs is missing."""
    problems = [c.problem for c in checks(cfg, stages) if c.problem]
    if problems:
        raise PreflightError(f"{len(problems)} problem(s) found before any stage ran "
                             f"({', '.join(stages)}):\n" + "\n".join(f"  - {p}" for p in problems))


def render(cfg, stages: list[str]) -> str:
    """The verdicts `fintune plan` prints, problems first."""
    found = checks(cfg, stages)
    bad = [c for c in found if c.problem]
    outputs = [c for c in found if c.what.startswith("output ")]
    lines = [f"before the first stage ({', '.join(stages)}): "
             + (f"{len(bad)} problem(s); the run would stop here" if bad else "everything later stages need is here")]
    lines += [f"  PROBLEM {c.problem}" for c in bad]
    lines += [f"  ok      {c.what}" + (f": {c.note}" if c.note else "") for c in found
              if not c.problem and c not in outputs]
    if outputs and not any(c.problem for c in outputs):
        lines.append(f"  ok      {len(outputs)} output paths writable")
    return "\n".join(lines)
