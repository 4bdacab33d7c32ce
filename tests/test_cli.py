import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_help_is_instant_and_imports_no_torch():
    start = time.time()
    out = subprocess.run([sys.executable, "-c",
                          "import sys; from fintune.cli import pipeline_parser; pipeline_parser().format_help();"
                          "print('torch' in sys.modules, 'transformers' in sys.modules)"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "False False"
    assert time.time() - start < 10


def test_config_error_is_one_line_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  learning_rat: 1\n")
    out = subprocess.run([sys.executable, "train_financial_model.py", "--config", str(bad)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "unknown key train.learning_rat" in out.stderr


def test_train_entry_has_its_flags():
    out = subprocess.run([sys.executable, "train.py", "--help"], capture_output=True, text=True, cwd=ROOT)
    for flag in ("--model_name", "--dataset_folder", "--output_dir", "--resume_from_checkpoint"):
        assert flag in out.stdout
