"""DPO after SFT on a tiny random model: one step runs, starts from the SFT
adapter and changes it; the reference is the SFT policy."""
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from conftest import tiny_overrides
from fintune.config import build_config

PAIRS = [{"prompt": f"Should I risk {p}% of my account on one trade?",
          "chosen": f"No. Risk 1-2% per trade; {p}% can wipe out the account after a few losses.",
          "rejected": "Yes, go big."} for p in (10, 20, 30, 50)]


def test_dpo_runs_a_step_from_the_sft_adapter(tmp_path, tiny_llama_dir):
    from fintune import data, train

    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    cfg = build_config(overrides=tiny_overrides(tmp_path, tiny_llama_dir, dpo=True, dpo_max_steps=1,
                                                dpo_learning_rate=1e-2, max_steps=2, save_steps=2))
    data.run(cfg)
    out = Path(train.run(cfg))
    rec = json.loads((out / "fintune_adapter.json").read_text())
    assert rec["dpo"]["global_step"] == 1 and rec["dpo"]["pairs"] == 4 and rec["dpo"]["beta"] == 0.1
    sft = load_file(str(Path(rec["dpo"]["sft_adapter"]) / "adapter_model.safetensors"))
    final = load_file(str(out / "adapter_model.safetensors"))
    assert sft.keys() == final.keys()  # the trained adapter only, not TRL's frozen "ref" copy
    assert any(not torch.equal(sft[k], final[k]) for k in sft)
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert any("rewards/chosen" in row or "loss" in row for row in log)


def test_sft_and_dpo_run_in_processes_of_their_own(tmp_path, tiny_llama_dir):
    """Through train.py: the SFT step and the DPO step are two fresh processes, so
    DPO's second load of the base never shares memory with the SFT model."""
    import os
    import subprocess
    import sys

    from conftest import ROOT, as_flags

    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    flags = as_flags(tiny_overrides(tmp_path, tiny_llama_dir, dpo=True, dpo_max_steps=1, max_steps=2, save_steps=2))
    out = subprocess.run([sys.executable, "train.py", "--config", "configs/cpu-smollm2.yaml",
                          "--manifest", str(tmp_path / "m.json")] + flags,
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    pids = json.loads((tmp_path / "m.json").read_text())["stages"]["train"]["pids"]
    assert len(pids) == 2 and len(set(pids)) == 2 and os.getpid() not in pids
    rec = json.loads((tmp_path / "lora" / "fintune_adapter.json").read_text())
    assert rec["dpo"]["global_step"] == 1 and rec["dpo"]["sft_adapter"].endswith("lora-sft")
