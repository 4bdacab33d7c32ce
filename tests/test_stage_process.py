"""Model-loading stages in processes of their own: import order there, what a
bug and a user error look like from the parent, signals passed on once, and
the HF eval runner keeping model and inputs on the device it reports."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import ROOT, as_flags, require_llama_cpp, tiny_overrides
from fintune.config import build_config
from fintune.errors import StageProcessError, UsageError
from fintune.pipeline import run_in_child
from fintune.train.trainer import run as TRAIN_ENTRY

TESTS = Path(__file__).resolve().parent

STANDIN_UNSLOTH = textwrap.dedent('''
    import json, os, sys
    with open(os.environ["UNSLOTH_RECORD"], "w") as f:
        json.dump({"pid": os.getpid(),
                   "imported_before": sorted(m for m in ("transformers", "trl", "peft") if m in sys.modules)}, f)

    class FastLanguageModel:
        @staticmethod
        def from_pretrained(**kw):
            raise SystemExit("stand-in unsloth: stopping after the import check")
''')
# A stand-in GPU for the child: choose_backend then picks unsloth
SITECUSTOMIZE = textwrap.dedent('''
    import torch
    torch.cuda.is_available = lambda: True
    torch.cuda.mem_get_info = lambda *a: (80 * 2**30, 80 * 2**30)
''')


def test_training_process_imports_unsloth_before_transformers_trl_peft(tmp_path, tiny_llama_dir, monkeypatch):
    standin = tmp_path / "standin"
    (standin / "unsloth").mkdir(parents=True)
    (standin / "unsloth" / "__init__.py").write_text(STANDIN_UNSLOTH)
    (standin / "sitecustomize.py").write_text(SITECUSTOMIZE)
    record = tmp_path / "record.json"
    monkeypatch.setenv("PYTHONPATH", str(standin))
    monkeypatch.setenv("UNSLOTH_RECORD", str(record))
    cfg = build_config(overrides=tiny_overrides(tmp_path, tiny_llama_dir, backend="unsloth"))
    with pytest.raises(StageProcessError) as e:
        run_in_child("train", TRAIN_ENTRY, cfg)
    assert "stand-in unsloth: stopping after the import check" in e.value.error
    seen = json.loads(record.read_text())
    assert seen["pid"] != os.getpid()
    assert seen["imported_before"] == []  # unsloth came first in the training process


def _boom(cfg):
    return 1 / 0


def _user_error(cfg):
    raise UsageError("train.optim 'adamw_9bit' is not an optimizer transformers knows")


def _ctrl_c(cfg):
    raise KeyboardInterrupt  # what Python's own SIGINT handler raises in a step that sets none


def _stopped(cfg):
    from fintune.errors import TrainingInterrupted

    raise TrainingInterrupted("training stopped by SIGINT at step 3; continue with --resume_from_checkpoint latest")


def _child_cfg(tmp_path, tiny_llama_dir, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(TESTS))  # so the child can import this module's entries
    return build_config(overrides=tiny_overrides(tmp_path, tiny_llama_dir))


def test_a_bug_in_a_stage_process_prints_and_keeps_its_traceback(tmp_path, tiny_llama_dir, monkeypatch, capfd):
    cfg = _child_cfg(tmp_path, tiny_llama_dir, monkeypatch)
    with pytest.raises(StageProcessError) as e:
        run_in_child("merge", _boom, cfg)
    assert e.value.returncode == 1
    assert e.value.error.startswith("Traceback") and "ZeroDivisionError: division by zero" in e.value.error
    assert "Traceback (most recent call last)" in capfd.readouterr().err


def test_a_user_error_in_a_stage_process_is_one_line(tmp_path, tiny_llama_dir, monkeypatch, capfd):
    cfg = _child_cfg(tmp_path, tiny_llama_dir, monkeypatch)
    with pytest.raises(StageProcessError) as e:
        run_in_child("train", _user_error, cfg)
    assert e.value.returncode == 2 and e.value.error.startswith("train.optim 'adamw_9bit'")
    err = capfd.readouterr().err
    assert "error: train.optim 'adamw_9bit'" in err and "Traceback" not in err


def test_ctrl_c_in_a_stage_process_without_its_own_handler_is_an_interruption(tmp_path, tiny_llama_dir,
                                                                               monkeypatch, capfd):
    from fintune.errors import TrainingInterrupted, report

    cfg = _child_cfg(tmp_path, tiny_llama_dir, monkeypatch)
    with pytest.raises(TrainingInterrupted) as e:
        run_in_child("merge", _ctrl_c, cfg)
    assert str(e.value) == "test_stage_process:_ctrl_c stopped by SIGINT; the same command runs it again"
    assert "Traceback" not in capfd.readouterr().err
    assert report(e.value) == 130


def test_an_interruption_in_a_stage_process_is_printed_once_by_the_orchestrator(tmp_path, tiny_llama_dir,
                                                                                 monkeypatch, capfd, caplog):
    from fintune.errors import TrainingInterrupted, report

    import logging

    from fintune.logs import _CurrentStderr

    cfg = _child_cfg(tmp_path, tiny_llama_dir, monkeypatch)
    # this process's lines reach caplog alone (an earlier test may have set up logging to
    # stderr), so the captured stderr holds the stage process's lines only
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [h for h in root.handlers if not isinstance(h, _CurrentStderr)])
    with pytest.raises(TrainingInterrupted) as e:
        run_in_child("train", _stopped, cfg)
    assert report(e.value) == 130
    child = capfd.readouterr()
    printed = child.out + child.err + caplog.text  # the stage process's and this one's
    assert printed.count("continue with --resume_from_checkpoint latest") == 1, printed


def test_a_bug_in_process_is_not_turned_into_a_one_line_error(tmp_path, tiny_llama_dir, monkeypatch):
    """The orchestrator's own stages (data, export): a non-project exception keeps its
    traceback, and the manifest records it."""
    from fintune.cli import run_main as main
    from fintune.pipeline import STAGES

    monkeypatch.setattr(STAGES[0], "entry", _boom)  # the data stage
    # the data stage alone: the preflight would otherwise ask for the export's llama.cpp first
    flags = as_flags(tiny_overrides(tmp_path, tiny_llama_dir)) + [
        "--skip_training", "--skip_merge", "--skip_quantization", "--skip_eval"]
    with pytest.raises(ZeroDivisionError):
        main(flags + ["--manifest", str(tmp_path / "m.json"), "--config", "configs/cpu-smollm2.yaml"])
    rec = json.loads((tmp_path / "m.json").read_text())["stages"]["data"]
    assert rec["status"] == "failed" and "Traceback" in rec["error"] and "ZeroDivisionError" in rec["error"]


def test_cli_exit_codes_for_a_stage_process_that_failed(caplog):
    from fintune.errors import report as report_error

    assert report_error(StageProcessError("merge", 1, "Traceback ...")) == 1
    assert "its traceback is above and in the run manifest" in caplog.text
    assert report_error(StageProcessError("train", 2, "bad setting")) == 2
    assert report_error(UsageError("bad setting")) == 2


def test_ctrl_c_reaches_training_once_it_saves_and_resumes(tmp_path, tiny_llama_dir):
    """SIGINT to the orchestrator (what Ctrl-C sends: the stage process has its own
    process group) is passed on once: training saves a checkpoint and stops with
    exit 130; --resume_from_checkpoint latest finishes it."""
    require_llama_cpp()
    flags = as_flags(tiny_overrides(tmp_path, tiny_llama_dir, max_steps=80, save_steps=80, eval_steps=80,
                                    val_fraction=0.0))
    cmd = [sys.executable, "train.py", "--config", "configs/cpu-smollm2.yaml",
           "--manifest", str(tmp_path / "m.json")] + flags
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log_dir = tmp_path / "ckpt" / "runs"
    deadline = time.time() + 300
    while not (log_dir.is_dir() and any(log_dir.rglob("events.*"))):  # the trainer has started
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() is not None else ""
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out
    # once: the stage process leaves the printing to the orchestrator
    assert out.count("continue with --resume_from_checkpoint latest") == 1, out
    assert out.count("SIGINT received") == 1, out
    ckpts = list((tmp_path / "ckpt").glob("checkpoint-*"))
    assert len(ckpts) == 1 and 0 < int(ckpts[0].name.split("-")[1]) < 80
    rec = json.loads((tmp_path / "m.json").read_text())["stages"]["train"]
    assert rec["status"] == "interrupted" and rec["pids"][0] != proc.pid
    done = subprocess.run(cmd + ["--resume_from_checkpoint=latest"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming from" in done.stdout + done.stderr


def test_hf_eval_keeps_model_and_inputs_on_the_device_it_reports(tiny_llama_dir, monkeypatch):
    import torch

    from fintune.eval import runner as rn

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert rn.hf_device() == ("cuda", "bfloat16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert rn.hf_device() == ("cuda", "float16")
    monkeypatch.undo()
    assert rn.hf_device() == ("cpu", "float32")

    # "meta" stands in for a second device: the model and every batch must follow the runner's
    r = rn.HFRunner(str(tiny_llama_dir), device=("meta", "float32"))
    assert {p.device.type for p in r.model.parameters()} == {"meta"}
    seen = []

    def generate(input_ids, attention_mask, max_new_tokens, **kw):
        seen.append((input_ids.device.type, attention_mask.device.type))
        return torch.cat([torch.zeros(input_ids.shape, dtype=torch.long),
                          torch.full((input_ids.shape[0], 1), 7)], dim=1)

    monkeypatch.setattr(r.model, "generate", generate)
    r.generate(["Sharpe ratio?", "NPV of 3 flows?", "Beta?"], 4, batch_size=2)
    assert seen == [("meta", "meta"), ("meta", "meta")]
