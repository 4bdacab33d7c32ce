"""Before the first stage: what later stages need is checked, every problem listed at
once (exit 2), and `fintune plan` shows the same verdicts. Run as a user runs it."""
import json
import stat
from pathlib import Path

import pytest

from fintune.config import build_config
from fintune.plan import preflight

ALL = ["data", "train", "merge", "export", "eval"]
QUANTIZE_HELP = """#!/bin/sh
cat <<'HELP'
usage: llama-quantize [--help] model-f32.gguf [model-quant.gguf] type [nthreads]

Allowed quantization types:
   2  or  Q4_0    :  4.34G, +0.4685 ppl @ Llama-3-8B
  15  or  Q4_K_M  :  4.58G, +0.1754 ppl @ Llama-3-8B
   7  or  Q8_0    :  7.96G, +0.0026 ppl @ Llama-3-8B
HELP
exit 1
"""


def _tool(root: Path, name: str, text: str) -> None:
    b = root / "build" / "bin" / name
    b.parent.mkdir(parents=True, exist_ok=True)
    b.write_text(text)
    b.chmod(b.stat().st_mode | stat.S_IEXEC)


def _llama_cpp(root: Path, quantize: str = QUANTIZE_HELP) -> Path:
    """A llama.cpp tree as LlamaCpp.preflight looks for it, with stand-in tools."""
    (root / "gguf-py" / "gguf").mkdir(parents=True)
    (root / "convert_hf_to_gguf.py").write_text("")
    _tool(root, "llama-quantize", quantize)
    _tool(root, "llama-completion", "#!/bin/sh\n")
    return root


def _errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


def test_run_without_llama_cpp_and_with_an_unknown_quant_type_stops_before_training(tmp_path, monkeypatch,
                                                                                     caplog, capsys):
    """From a folder without llama.cpp, `fintune run --quant_types Q4_K_M,Q3_X` started
    training and failed at the export; now both problems come first, together, and
    nothing is written. `fintune plan` says the same."""
    from fintune.cli import main

    monkeypatch.chdir(tmp_path)
    argv = ["--config", "cpu-smollm2", "--quant_types", "Q4_K_M,Q3_X"]
    assert main(["run"] + argv) == 2
    (error,) = _errors(caplog)
    problems = error.splitlines()[1:]
    assert error.startswith("error: 2 problem(s) found before any stage ran (data, train, merge, export, eval)")
    assert problems[0].startswith("  - llama.cpp not found at llama.cpp; build it with `fintune setup-llama-cpp")
    assert problems[1].startswith("  - export.quant_types: unknown quantization type 'Q3_X'; valid names: ")
    assert not (tmp_path / "outputs" / "data").exists()
    manifest = tmp_path / "outputs" / "run_manifest.json"
    assert not manifest.exists() or not json.loads(manifest.read_text()).get("stages")

    capsys.readouterr()
    assert main(["plan"] + argv) == 0
    plan = capsys.readouterr().out
    assert "2 problem(s); the run would stop here" in plan
    for p in problems:
        assert f"  PROBLEM {p[4:]}" in plan


def test_quant_types_are_checked_against_the_tools_own_list(tmp_path):
    root = _llama_cpp(tmp_path / "lc")
    cfg = build_config(overrides={"llama_cpp_path": str(root), "quant_types": "Q4_K_M,Q5_K_M"})
    found = {c.what: c.problem for c in preflight.checks(cfg, ALL)}
    assert found["llama.cpp tools"] is None and found["quant type Q4_K_M"] is None
    assert found["quant type Q5_K_M"] == ("export.quant_types: unknown quantization type 'Q5_K_M'; "
                                          "llama-quantize knows: Q4_0, Q4_K_M, Q8_0")


def test_a_tool_that_does_not_run_here_is_a_problem(tmp_path):
    """An Illegal instruction (a tree built for another CPU) kills the tool with SIGILL."""
    root = _llama_cpp(tmp_path / "lc", "#!/bin/sh\nkill -ILL $$\n")
    cfg = build_config(overrides={"llama_cpp_path": str(root)})
    (problem,) = [c.problem for c in preflight.checks(cfg, ["export"]) if c.problem]
    assert problem.startswith("llama-quantize does not run here (exit -4")
    assert "fintune setup-llama-cpp" in problem


def test_training_alone_does_not_need_llama_cpp(tmp_path):
    cfg = build_config(overrides={"llama_cpp_path": str(tmp_path / "none"), "quant_types": "Q3_X",
                                  "data_dir": str(tmp_path / "d"), "lora_output_dir": str(tmp_path / "l"),
                                  "checkpoint_dir": str(tmp_path / "c")})
    assert [c.problem for c in preflight.checks(cfg, ["data", "train"]) if c.problem] == []


def test_outputs_that_cannot_be_written_and_missing_eval_files(tmp_path):
    (tmp_path / "a_file").write_text("")
    cfg = build_config(overrides={"eval_dir": str(tmp_path / "a_file" / "eval"),
                                  "eval_files": str(tmp_path / "mine.jsonl")})
    problems = [c.problem for c in preflight.checks(cfg, ["eval"]) if c.problem]
    assert f"eval.eval_files: {tmp_path / 'mine.jsonl'}: no such file" in problems
    assert f"eval_dir {tmp_path / 'a_file' / 'eval'}: {tmp_path / 'a_file'} is a file, not a folder" in problems
    # the shipped default set is optional: a note, not a problem
    default = build_config(overrides={"eval_dir": str(tmp_path / "eval")})
    notes = {c.what: (c.problem, c.note) for c in preflight.check_eval_files(default)}
    assert all(p is None for p, _ in notes.values())
