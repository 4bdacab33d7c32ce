"""The package as a user installs it: a wheel built from this checkout, installed
into a fresh virtual environment with nothing fetched, run from a directory
outside the repository."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _names(requirements: Path) -> set[str]:
    """Distribution names of a requirements file, normalized as PEP 503 does."""
    names = set()
    for line in requirements.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[; ]", line)[0]).lower())
    return names


def _normalized(specs: list[str]) -> set[str]:
    return {re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[; ]", s)[0]).lower() for s in specs}


def test_pyproject_names_every_pinned_requirement():
    """The pins stay in requirements*.txt and act as constraints (`pip install -c
    requirements.txt .`), which only holds if the package asks for each of them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    runtime = _normalized(project["dependencies"])
    assert _names(ROOT / "requirements.txt") - {"pytest", "setuptools"} == runtime
    assert _normalized(extras["gpu"]) == _names(ROOT / "requirements-gpu.txt")
    assert project["scripts"]["fintune"] == "fintune.cli:main"


def _run(cmd: list, cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, **kw)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """bin/ of a fresh venv holding only the wheel; its dependencies come from
    this interpreter's site-packages through a .pth line, so nothing is resolved
    or downloaded (pip: --no-deps --no-index)."""
    tmp = tmp_path_factory.mktemp("wheel")
    # build from a copy: an in-tree build leaves build/ and *.egg-info in the shared checkout
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "fintune", src / "fintune", ignore=shutil.ignore_patterns("__pycache__"))
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                  "-q", "-w", tmp / "dist", src], tmp)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp / "dist").glob("fintune-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    assert {f"fintune/configs/{p.name}" for p in (ROOT / "fintune" / "configs").glob("*.yaml")} <= names
    assert "fintune/cli/__init__.py" in names
    # the tools-aware chat templates the GGUF and the Modelfile are built from
    assert {f"fintune/templates/{p.name}" for p in (ROOT / "fintune" / "templates").glob("*.jinja")} <= names
    assert (ROOT / "fintune" / "templates" / "chatml_tools.jinja").is_file()

    env = tmp / "env"
    assert _run([sys.executable, "-m", "venv", "--without-pip", env], tmp).returncode == 0
    py = env / "bin" / "python"
    inst = _run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", "--no-index", wheel], tmp)
    assert inst.returncode == 0, inst.stderr
    site = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp).stdout.strip()
    # a plain path line: this venv's own .pth files (an editable fintune among them) are not read
    Path(site, "fintune-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env / "bin"


@pytest.fixture()
def elsewhere(tmp_path) -> Path:
    assert ROOT not in tmp_path.parents
    return tmp_path


def test_installed_fintune_is_the_wheel_not_the_checkout(installed, elsewhere):
    out = _run([installed / "python", "-c", "import fintune; print(fintune.__file__)"], elsewhere)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).is_relative_to(installed.parent)


def test_installed_package_reads_its_tools_template(installed, elsewhere):
    code = "from fintune.templates.tools import template_source; print(template_source('chatml')[:200])"
    out = _run([installed / "python", "-c", code], elsewhere)
    assert out.returncode == 0, out.stderr
    assert "tool" in out.stdout


def test_installed_help_and_run_help(installed, elsewhere):
    top = _run([installed / "fintune", "--help"], elsewhere)
    assert top.returncode == 0, top.stderr
    for name in ("run", "plan", "data", "train", "merge", "export", "eval"):
        assert f"\n    {name} " in top.stdout
    run = _run([installed / "fintune", "run", "--help"], elsewhere)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("usage: fintune run")
    for heading in ("profile and paths:", "stages:", "model settings:", "data settings:", "lora settings:",
                    "train settings:", "export settings:", "eval settings:", "examples:"):
        assert f"\n{heading}\n" in run.stdout


def test_installed_plan_finds_the_profile_by_name(installed, elsewhere):
    out = _run([installed / "fintune", "plan", "--config", "r1-distill-qwen-14b-24gb"], elsewhere)
    assert out.returncode == 0, out.stderr
    # the profile came from the installed package, and no model was loaded (plan.model_config: offline table)
    assert f"from {installed.parent}" in out.stderr and "r1-distill-qwen-14b-24gb.yaml" in out.stderr
    assert "estimated peak GPU memory" in out.stdout and "R1-Distill-Qwen-14B" in out.stdout

    wrong = _run([installed / "fintune", "plan", "--config", "r1-distill-qwen-14b"], elsewhere)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert "cpu-smollm2, r1-distill-qwen-14b-24gb, r1-distill-qwen-7b-h100" in wrong.stderr


def test_installed_package_builds_llama_cpp_and_its_errors_say_how(installed, elsewhere):
    """The wheel has no scripts/ folder: `fintune setup-llama-cpp DIR` runs the build script
    shipped inside the package (dry run here: what it would configure, nothing fetched),
    and a missing llama.cpp names that command and --llama_cpp_path."""
    env = {**os.environ, "LLAMA_CPP_DRY_RUN": "1"}
    env.pop("PYTHONPATH", None)
    out = subprocess.run([str(installed / "fintune"), "setup-llama-cpp", "lc"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "configure: cmake -S lc -B lc/build" in out.stdout and "llama-quantize" in out.stdout

    from fintune.llama_cpp import LlamaCpp, LlamaCppError

    with pytest.raises(LlamaCppError) as e:
        LlamaCpp(elsewhere / "llama.cpp").preflight()
    assert f"`fintune setup-llama-cpp {elsewhere / 'llama.cpp'}`" in str(e.value)
    assert "--llama_cpp_path" in str(e.value) and "scripts/" not in str(e.value)
