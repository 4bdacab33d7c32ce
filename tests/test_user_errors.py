"""A user's mistakes answered on one line with exit 2, before any long work: run as a
user runs them (`fintune` in-process through main(argv), the scripts in a subprocess)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


@pytest.fixture
def eval_file(tmp_path):
    p = tmp_path / "set.jsonl"
    p.write_text(json.dumps({"id": "a", "question": "What is 2+2?", "answer_numeric": 4}) + "\n")
    return p


@pytest.mark.parametrize("flags, message", [
    (["--model", "/tmp/nope"], "error: --model /tmp/nope: no such directory"),
    (["--model", str(ROOT), "--adapter", "/tmp/nope"], "error: --adapter /tmp/nope: no such directory"),
])
def test_eval_with_a_missing_model_or_adapter_is_one_line(flags, message, eval_file, tmp_path, caplog):
    from fintune.cli import main

    assert main(["eval", "--eval_file", str(eval_file), "--output", str(tmp_path / "o")] + flags) == 2
    assert _errors(caplog) == [message]


def test_data_with_a_missing_base_model_folder_fails(tmp_path, caplog, monkeypatch):
    """It exited 0 with "token lengths: not checked": a folder that is not there is a
    mistake to name, not a hub model that cannot be reached."""
    from fintune.cli import main

    monkeypatch.chdir(tmp_path)
    argv = ["data", "--config", "cpu-smollm2", "--base_model", "/tmp/nope/model", "--num_generated", "20",
            "--contamination_files", ""]
    assert main(argv) == 2
    assert _errors(caplog) == ["error: model.base_model /tmp/nope/model: no such directory"]
    assert not (tmp_path / "outputs" / "data" / "train.jsonl").exists()


def test_a_hub_model_offline_and_not_cached_is_one_line(tmp_path):
    """train.py with a hub id, HF_HUB_OFFLINE and an empty cache: one line, exit 2, in
    seconds; not huggingface_hub's retries and a traceback."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", "cpu-smollm2",
                          "--model_name", "HuggingFaceTB/SmolLM2-135M-Instruct"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "stage data" not in out.stderr  # refused before the first stage
    assert "error: 1 problem(s) found before any stage ran (data, train)" in out.stderr, out.stderr
    assert ("  - model.base_model HuggingFaceTB/SmolLM2-135M-Instruct: not a local directory, not in the local "
            "Hugging Face cache, and the hub is unreachable (HF_HUB_OFFLINE is set)") in out.stderr
