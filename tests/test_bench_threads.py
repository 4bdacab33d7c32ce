"""bench/train_threads.py: each variant's settings reach the training process it starts."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT


def _bench():
    sys.path.insert(0, str(ROOT / "bench"))
    import train_threads

    return train_threads


def test_each_variant_trains_in_its_own_process_with_its_environment(monkeypatch, capsys):
    bench = _bench()
    from fintune.pipeline import mimalloc_path

    seen = []

    def fake_run(cmd, env, **kw):
        seen.append((cmd, env))
        rate = 100.0 if env.get("OMP_WAIT_POLICY") != "PASSIVE" else 50.0
        out = "noise\nRESULT " + json.dumps({"precision": "bf16", "tokens_per_s": rate, "tokens": 10, "seconds": 1.0})
        return subprocess.CompletedProcess(cmd, 0, stdout=out, stderr="")

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert bench.main(["--rounds", "2", "--steps", "3", "--variants", "default,omp_passive,omp_bind"]) == 0
    # alternating within each round, one process per run, the step count passed on
    assert [env.get("OMP_WAIT_POLICY") for _, env in seen] == [None, "PASSIVE", None] * 2
    assert [env.get("OMP_PROC_BIND") for _, env in seen] == [None, None, "close"] * 2
    assert all(cmd[-2:] == ["--steps", "3"] and "--child" in cmd for cmd, _ in seen)
    lib = mimalloc_path()
    assert all((str(lib) in env.get("LD_PRELOAD", "")) == bool(lib) for _, env in seen)
    out = capsys.readouterr().out
    assert "omp_passive  median    50.0 tokens/s = 0.50 x default" in out
    assert out.strip().splitlines()[-1] == "best: default 1.00 x default"


def test_unknown_variant_lists_the_valid_ones(capsys):
    bench = _bench()
    with pytest.raises(SystemExit):
        bench.main(["--variants", "default,omp_turbo"])
    assert "omp_active" in capsys.readouterr().err


def test_a_failed_training_process_names_its_variant(monkeypatch):
    bench = _bench()
    monkeypatch.setattr(bench.subprocess, "run",
                        lambda cmd, env, **kw: subprocess.CompletedProcess(cmd, 1, stdout="", stderr="boom"))
    with pytest.raises(SystemExit, match="variant default"):
        bench.main(["--rounds", "1", "--variants", "default"])
