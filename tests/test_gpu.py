"""The CUDA path for real: `pytest -m gpu` on a machine with a GPU (skipped elsewhere).

On the embedded SmolLM2 in 4-bit: the whole pipeline through Unsloth for a
short run, the transformers + PEFT QLoRA backend for a few steps, SIGTERM and
resume on the GPU, and one DPO step on the GPU. The R1 rehearsal model (tiny
random Qwen2, real R1 tokenizer and template) through the Unsloth backend end
to end with DPO, on the R1 14B profile's settings. Needs requirements-gpu.txt and
a built llama.cpp (the export and eval stages run it); scripts/gpu_check.sh runs
this on the GPU machine and keeps the pipeline runs' logs in $FINTUNE_GPU_LOG_DIR.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, as_flags, require_llama_cpp

pytestmark = pytest.mark.gpu


def _flags(root: Path, **extra) -> list[str]:
    values = {
        "data_dir": root / "data", "lora_output_dir": root / "lora", "checkpoint_dir": root / "ckpt",
        "merged_model_dir": root / "merged", "gguf_f16_path": root / "m_f16.gguf",
        "gguf_q4_path": root / "m_q4_k_m.gguf", "gguf_q8_path": root / "m_q8_0.gguf",
        "modelfile_path": root / "Modelfile", "eval_dir": root / "eval",
        # sized to the check's share (docs/gpu_check.md): the stages run, not a long training
        "load_in_4bit": True, "num_generated": 200, "per_device_train_batch_size": 8, "max_steps": 10,
        "save_steps": 10, "eval_steps": 10, "eval_limit": 8, "eval_max_new_tokens": 64,
        "eval_models": "base,adapter,merged,F16,Q8_0,Q4_K_M", "eval_files": "", "contamination_files": "",
    }
    values.update(extra)
    return ["--config", "configs/cpu-smollm2.yaml", "--manifest", str(root / "run_manifest.json")] + \
        as_flags({k: str(v) if isinstance(v, Path) else v for k, v in values.items()})


R1_PROFILE = ROOT / "configs" / "r1-distill-qwen-14b-24gb.yaml"
R1_PAIRS = [{"prompt": f"Should I put {p}% of my account on one trade?", "chosen": "No: risk 1-2% per trade.",
             "rejected": "Yes, go big."} for p in (10, 20, 30, 40, 50, 60)]


def r1_flags(root: Path, model_dir: Path) -> list[str]:
    """The R1 14B profile with the base swapped for the tiny model, DPO and GRPO on, the run shortened."""
    values = {
        "base_model": model_dir, "backend": "unsloth", "dataset_folder": root / "datasets",
        "data_dir": root / "data", "num_generated": 60, "heldout_fraction": 0.1, "hub_datasets": "",
        "contamination_files": "", "lora_output_dir": root / "lora", "checkpoint_dir": root / "ckpt",
        "max_steps": 4, "learning_rate": 1e-3, "logging_steps": 1, "save_steps": 4, "eval_steps": 4,
        "dpo": True, "dpo_max_steps": 1, "llama_cpp_path": ROOT / "llama.cpp",
        # Unsloth's rewritten GRPOTrainer, its generation and its loss: one step of 2 replies
        "grpo": True, "grpo_max_steps": 1, "grpo_num_generations": 2, "grpo_max_completion_length": 32,
        "grpo_save_steps": 1,
        "merged_model_dir": root / "merged", "gguf_f16_path": root / "m_f16.gguf",
        "gguf_q4_path": root / "m_q4_k_m.gguf", "gguf_q8_path": root / "m_q8_0.gguf",
        "modelfile_path": root / "Modelfile", "eval_dir": root / "eval", "eval_limit": 4,
        "eval_max_new_tokens": 24, "eval_files": "",
    }
    return ["--config", str(R1_PROFILE), "--manifest", str(root / "run_manifest.json")] + \
        as_flags({k: str(v) if isinstance(v, Path) else v for k, v in values.items()})


def _keep_log(name: str, text: str) -> None:
    """The run's log where gpu_check.sh collects the stage lines for the closing note."""
    folder = os.environ.get("FINTUNE_GPU_LOG_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{name}.log").write_text(text)


def _pipeline(name: str, root: Path, flags: list[str]) -> str:
    out = subprocess.run([sys.executable, "train_financial_model.py"] + flags,
                         cwd=ROOT, capture_output=True, text=True, timeout=1800)
    _keep_log(name, out.stdout + out.stderr)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def unsloth_run(tmp_path_factory):
    pytest.importorskip("unsloth")
    require_llama_cpp()
    root = tmp_path_factory.mktemp("gpu-unsloth")
    return root, _pipeline("unsloth-smollm2", root, _flags(root, backend="unsloth"))


@pytest.mark.llama_cpp
def test_unsloth_pipeline_completes_every_stage(unsloth_run):
    root, log = unsloth_run
    stages = json.loads((root / "run_manifest.json").read_text())["stages"]
    assert list(stages) == ["data", "train", "merge", "export", "eval"]
    assert all(rec["status"] == "complete" for rec in stages.values())
    rec = json.loads((root / "lora" / "fintune_adapter.json").read_text())
    assert rec["backend"] == "unsloth" and rec["cuda_peak_mb"] > 0 and rec["versions"].get("unsloth")
    assert "Unsloth should be imported before" not in log  # unsloth first in the training process


@pytest.mark.llama_cpp
def test_merge_after_unsloth_training_checks_its_logits(unsloth_run):
    root, _ = unsloth_run
    merge = json.loads((root / "merged" / "fintune_merge.json").read_text())
    assert merge["max_logit_diff"] < 0.1


@pytest.mark.llama_cpp
def test_eval_ran_hf_models_on_cuda_and_three_ggufs_exist(unsloth_run):
    root, _ = unsloth_run
    for name in ("m_f16.gguf", "m_q8_0.gguf", "m_q4_k_m.gguf"):
        assert (root / name).stat().st_size > 10_000_000
    results = json.loads((root / "eval" / "report.json").read_text())["results"]
    hf = {r["model"]: r for r in results if r["model"] in ("base", "adapter", "merged")}
    assert set(hf) == {"base", "adapter", "merged"}
    assert all(r["device"] == "cuda" and r["dtype"] in ("bfloat16", "float16") for r in hf.values())


@pytest.fixture(scope="module")
def r1_unsloth_run(tmp_path_factory, tiny_qwen2_r1_dir):
    pytest.importorskip("unsloth")
    require_llama_cpp()
    root = tmp_path_factory.mktemp("gpu-r1-unsloth")
    (root / "datasets").mkdir()
    (root / "datasets" / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in R1_PAIRS))
    return root, _pipeline("unsloth-r1-rehearsal-dpo", root, r1_flags(root, tiny_qwen2_r1_dir))


@pytest.mark.llama_cpp
def test_r1_rehearsal_through_unsloth_with_dpo_and_grpo_completes_every_stage(r1_unsloth_run):
    root, log = r1_unsloth_run
    manifest = json.loads((root / "run_manifest.json").read_text())
    assert {k: v["status"] for k, v in manifest["stages"].items()} == dict.fromkeys(
        ["data", "train", "grpo", "merge", "export", "eval"], "complete")
    pids = manifest["stages"]["train"]["pids"]
    assert len(pids) == 2 and pids[0] != pids[1]  # SFT and DPO each in a process of its own
    rec = json.loads((root / "lora" / "fintune_adapter.json").read_text())
    assert rec["backend"] == "unsloth" and rec["cuda_peak_mb"] > 0
    assert rec["chat_template_family"] == "deepseek-r1" and rec["model"]["max_seq_length"] == 4096
    assert rec["dpo"]["backend"] == "unsloth" and rec["dpo"]["global_step"] == 1
    assert rec["dpo"]["pairs"] == len(R1_PAIRS)
    assert "Unsloth should be imported before" not in log


@pytest.mark.llama_cpp
def test_r1_rehearsal_grpo_step_ran_through_unsloth(r1_unsloth_run):
    """Unsloth's GRPOTrainer (unsloth 2026.10.9 models/rl.py patch_trl_rl_trainers): one step,
    2 replies sampled by model.generate (train.grpo_use_vllm off), rewarded, trained."""
    from fintune.adapters import ADAPTER_RECORD

    root, _ = r1_unsloth_run
    found = [json.loads(p.read_text()) for p in root.glob(f"lora*/{ADAPTER_RECORD}")]
    grpo = [r["grpo"] for r in found if "grpo" in r]
    assert len(grpo) == 1, found
    g = grpo[0]
    assert g["backend"] == "unsloth" and g["global_step"] == 1 and g["use_vllm"] is False
    assert g["grpo_num_generations"] == 2 and g["completion_tokens_this_run"] > 0
    assert g["reward_first_last"][0] is not None


@pytest.mark.llama_cpp
def test_r1_rehearsal_merge_checks_its_logits_and_export_keeps_the_r1_tokenizer(r1_unsloth_run):
    from fintune.export.gguf_check import verify

    root, _ = r1_unsloth_run
    merge = json.loads((root / "merged" / "fintune_merge.json").read_text())
    assert merge["merge_mode"] == "in_memory" and merge["max_logit_diff"] < 0.1
    assert merge["chat_template_family"] == "deepseek-r1"
    for q, name in (("Q8_0", "m_q8_0.gguf"), ("Q4_K_M", "m_q4_k_m.gguf")):
        # convert_hf_to_gguf.py names the pre-tokenizer by hashing the encoding of a fixed text
        # (llama.cpp get_vocab_base_pre): the carried tokenizer must still hash as R1's
        assert verify(root / name, q)["pre"] == "deepseek-r1-qwen"


@pytest.mark.llama_cpp
def test_r1_rehearsal_eval_ran_the_profiles_models_on_the_gpu(r1_unsloth_run):
    from fintune.llama_cpp import LlamaCpp

    root, _ = r1_unsloth_run
    results = {r["model"]: r for r in json.loads((root / "eval" / "report.json").read_text())["results"]}
    assert set(results) == {"base", "adapter", "q8_0", "q4_k_m"}  # the profile's eval_models, none left out
    # a tiny base fits in bf16: the plan loads it so, not in the profile's 4-bit (plan_stages.hf_eval_line)
    assert all(results[m]["device"] == "cuda" and results[m]["dtype"] in ("bfloat16", "float16")
               for m in ("base", "adapter"))
    gguf_device = "cuda (llama.cpp)" if LlamaCpp(ROOT / "llama.cpp").cuda_build else "cpu (llama.cpp)"
    assert all(r["device"] == gguf_device for m, r in results.items() if m not in ("base", "adapter", "merged"))


def qlora_flags(root: Path) -> list[str]:
    """PEFT QLoRA for 6 steps. torch_compile off: the CPU profile turns it on, and compiling
    the 4-bit layers would take most of the timed step (backends.compile_layers)."""
    return _flags(root, backend="peft", max_steps=6, save_steps=6, eval_steps=6, torch_compile=False)


def test_peft_qlora_backend_trains_a_few_steps_on_the_gpu(tmp_path):
    out = subprocess.run([sys.executable, "train.py"] + qlora_flags(tmp_path),
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rec = json.loads((tmp_path / "lora" / "fintune_adapter.json").read_text())
    assert rec["backend"] == "peft" and rec["global_step"] == 6 and rec["cuda_peak_mb"] > 0
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "lora" / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and weights[k].abs().sum() > 0 for k in weights)


def test_sigterm_on_the_gpu_saves_and_resume_finishes(tmp_path):
    pytest.importorskip("unsloth")
    # 120 steps of 8 x ~260 tokens: about 30 s at the ~8,000 tokens/s measured, long enough to be
    # stopped mid-run 3 s after its first log event
    cmd = [sys.executable, "train.py"] + _flags(tmp_path, backend="unsloth", max_steps=120, save_steps=120,
                                                eval_steps=120, val_fraction=0.0)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while not any((tmp_path / "ckpt").rglob("events.*")):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.5)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 130, log[-3000:]
    assert len(list((tmp_path / "ckpt").glob("checkpoint-*"))) == 1
    done = subprocess.run(cmd + ["--resume_from_checkpoint", "latest"], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads((tmp_path / "lora" / "fintune_adapter.json").read_text())["global_step"] == 120


def test_one_dpo_step_on_the_gpu(tmp_path):
    pairs = [{"prompt": f"Should I put {p}% of my account on one trade?", "chosen": "No: risk 1-2% per trade.",
              "rejected": "Yes, go big."} for p in (10, 20, 30, 40)]
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    out = subprocess.run([sys.executable, "train.py"] + _flags(
        tmp_path, backend="peft", max_steps=2, save_steps=2, eval_steps=2, dpo=True, dpo_max_steps=1,
        dataset_folder=tmp_path / "datasets"), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rec = json.loads((tmp_path / "lora" / "fintune_adapter.json").read_text())
    assert rec["dpo"]["global_step"] == 1 and rec["dpo"]["pairs"] == 4
    pids = json.loads((tmp_path / "run_manifest.json").read_text())["stages"]["train"]["pids"]
    assert len(pids) == 2 and pids[0] != pids[1]  # SFT and DPO each in a process of its own

