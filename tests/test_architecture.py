"""The layout holds: imports only go down the layers of .importlinter, functions stay
short, and every stage is addressed by its function, never by a string."""
import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "fintune"
MAX_FUNCTION_LINES = 60


def test_imports_follow_the_layers_and_have_no_loops():
    """lint-imports (import-linter, requirements-test.txt) checks .importlinter: the layers
    from the CLI down to errors, and no import loop among any package's modules."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("lint-imports not installed: pip install -r requirements-test.txt (make test does)")
    out = subprocess.run([exe, "--config", str(ROOT / ".importlinter")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "2 kept, 0 broken" in out.stdout


def test_a_layer_violation_is_caught(tmp_path):
    """The contract is not vacuous: a copy of the package where machine.py (a low layer)
    imports the plan (above it) breaks it."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("lint-imports not installed: pip install -r requirements-test.txt (make test does)")
    copy = tmp_path / "src"
    shutil.copytree(PACKAGE, copy / "fintune", ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "fintune" / "machine.py", "a") as f:
        f.write("\n\ndef _upward():\n    from fintune.plan import training  # noqa: F401\n")
    out = subprocess.run([exe, "--config", str(ROOT / ".importlinter")], cwd=copy, capture_output=True, text=True,
                         env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"})
    assert out.returncode != 0 and "fintune.machine -> fintune.plan.training" in out.stdout


def _functions():
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.relative_to(ROOT), node


def test_no_function_is_longer_than_sixty_lines():
    long = [f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path, node in _functions() if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, "split these along their natural steps:\n" + "\n".join(long)


def test_stages_are_functions_a_reader_can_jump_to():
    """Each stage's entry (and each of its steps) is a function; the name a stage process
    is given is taken from the function and turns back into it."""
    from fintune.config import build_config
    from fintune.pipeline import STAGES, resolve_step, step_name

    cfg = build_config(overrides={"dpo": True, "grpo": True})
    for stage in STAGES:
        for step in stage.step_entries(cfg):
            assert callable(step) and step.__name__ == "run", (stage.name, step)
            assert resolve_step(step_name(step)) is step


def test_no_function_is_named_by_a_string():
    """"module:function" strings broke only at run time when a function was renamed."""
    pattern = re.compile(r"[\"']fintune(\.\w+)+:\w+[\"']")
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in PACKAGE.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, hits
