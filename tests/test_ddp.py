"""Multi-process training: `torchrun --nproc_per_node 2 train.py` on CPU (gloo)
runs two DDP steps on a tiny model; only rank 0 writes the adapter and manifest."""
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, tiny_overrides


def _flags(values: dict) -> list[str]:
    out = []
    for k, v in values.items():
        if isinstance(v, bool):
            out.append(f"--{k}" if v else f"--no-{k}")
        else:
            out += [f"--{k}", str(v)]
    return out


def test_two_process_ddp_runs_two_steps(tmp_path, tiny_llama_dir):
    from fintune.cli import run_main as main

    values = tiny_overrides(tmp_path, tiny_llama_dir, max_steps=2, save_steps=2, val_fraction=0.0)
    manifest = str(tmp_path / "run_manifest.json")
    # under torchrun the data must already exist: prepared once, single process
    assert main(["--manifest", manifest, "--skip_training", "--skip_merge", "--skip_quantization",
                 "--skip_eval", *_flags(values)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           str(ROOT / "train.py"), "--manifest", manifest, *_flags(values)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads((Path(values["lora_output_dir"]) / "fintune_adapter.json").read_text())
    assert rec["world_size"] == 2 and rec["global_step"] == 2
    stages = json.loads(Path(manifest).read_text())["stages"]
    assert stages["train"]["status"] == "complete"


def test_launch_without_prepared_data_says_what_to_run(tmp_path, tiny_llama_dir, monkeypatch, caplog):
    from fintune.cli import train_main

    monkeypatch.setenv("WORLD_SIZE", "2")
    values = tiny_overrides(tmp_path, tiny_llama_dir)
    assert train_main(["--manifest", str(tmp_path / "m.json"), *_flags(values)]) == 2
    assert "prepare the data first" in caplog.text and "--skip_training" in caplog.text
