"""--dry_run: parameter counts against real models, estimates in the printed plan."""
import subprocess
import sys

from conftest import ROOT, tiny_overrides
from fintune.config import build_config
from fintune.plan import training as plan


def test_parameter_counts_match_a_real_model_and_peft(tiny_llama_dir, tmp_path):
    import json

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    cfg = build_config(overrides=tiny_overrides(tmp_path, tiny_llama_dir, lora_r=8))
    est = plan.estimate(cfg, "peft")
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    assert est["params"] == model.num_parameters()
    peft = get_peft_model(model, LoraConfig(r=8, target_modules=cfg.lora.target_modules))
    trainable, _ = peft.get_nb_trainable_parameters()
    assert est["trainable"] == trainable
    top = build_config(overrides=tiny_overrides(tmp_path, tiny_llama_dir, lora_r=8, lora_top_layers=1))
    fresh = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    one_layer = get_peft_model(fresh, LoraConfig(r=8, target_modules=cfg.lora.target_modules, layers_to_transform=[1]))
    assert plan.estimate(top, "peft")["trainable"] == one_layer.get_nb_trainable_parameters()[0] == trainable // 2
    assert json.loads((tiny_llama_dir / "config.json").read_text())["tie_word_embeddings"] is True


def test_known_r1_sizes_without_download(tmp_path):
    cfg = build_config(overrides={"base_model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", "load_in_4bit": True})
    est = plan.estimate(cfg, "unsloth")
    assert 14.6e9 < est["params"] < 14.9e9  # the model card says 14.8B
    cfg7 = build_config(overrides={"base_model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"})
    assert 7.5e9 < plan.estimate(cfg7, "peft")["params"] < 7.7e9  # 7.6B
    # 4-bit weights are about a third of 16-bit ones (embeddings stay 16-bit)
    w4 = est["memory"]["weights"]
    w16 = plan.estimate(build_config(overrides={"base_model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"}),
                        "unsloth")["memory"]["weights"]
    assert 0.25 < w4 / w16 < 0.4


def test_dry_run_prints_the_plan_and_loads_no_model():
    code = ("import sys; from fintune.cli import run_main as main; "
            "rc = main(['--config', 'configs/r1-distill-qwen-14b-24gb.yaml', '--backend', 'unsloth', '--dry_run']); "
            "assert 'transformers' not in sys.modules and 'unsloth' not in sys.modules; sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for line in ("DeepSeek-R1-Distill-Qwen-14B (14.77B parameters, 4-bit base)", "backend          unsloth",
                 "estimated peak GPU memory allocated:", "LoRA + grads + optimizer", "Q4_K_M GGUF",
                 "estimated disk:", "fits a card of 24 GB: yes"):
        assert line in out.stdout


# Peak GiB allocated, measured on an H100 (issue 11): random weights with the R1-Distill-Qwen
# configs, LoRA r=32/alpha=64 on the 7 projections, 8-bit AdamW, gradient checkpointing.
MEASURED = [
    ("14B", {"load_in_4bit": True, "per_device_train_batch_size": 1}, "unsloth", 11.73),
    ("14B", {"load_in_4bit": True, "per_device_train_batch_size": 1}, "peft", 27.33),
    ("7B", {"load_in_4bit": False, "per_device_train_batch_size": 4}, "unsloth", 19.84),
]


def _r1(size, **kw):
    return build_config(overrides={"base_model": f"deepseek-ai/DeepSeek-R1-Distill-Qwen-{size}", "max_seq_length": 4096,
                                   "lora_r": 32, "lora_alpha": 64, "gradient_checkpointing": True, **kw})


def test_estimates_within_15_percent_of_the_h100_measurements():
    for size, kw, backend, gib in MEASURED:
        est = sum(plan.memory(_r1(size, **kw), backend).values()) / plan.GiB
        assert abs(est / gib - 1) < 0.15, (size, backend, est, gib)


def test_14b_profile_through_peft_needs_more_than_24_gib_and_says_so():
    out = subprocess.run([sys.executable, "train.py", "--config", "configs/r1-distill-qwen-14b-24gb.yaml",
                          "--backend", "peft", "--dry_run"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    total = float(next(l for l in out.stdout.splitlines() if l.strip().startswith("total")).split()[1])
    assert total > 24 and "fits a card of 24 GB: no" in out.stdout


def test_14b_profile_refuses_to_load_on_a_24_gb_card(monkeypatch, tmp_path):
    """A stand-in memory query says 24 GiB free: the training stage stops before any
    model load (loading is made to fail loudly), naming the fixes."""
    import pytest
    import transformers

    from fintune.config import load_yaml
    from fintune.errors import UsageError
    from fintune import machine
    from fintune.train import trainer

    monkeypatch.setattr(machine, "cuda_available", lambda: True)
    monkeypatch.setattr(machine, "gpu_free_bytes", lambda: 24 * plan.GiB)

    def no_load(*a, **k):
        raise AssertionError("a model was loaded before the memory check")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_load)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_load)
    cfg = build_config(load_yaml(ROOT / "configs" / "r1-distill-qwen-14b-24gb.yaml"),
                       {"backend": "peft", "data_dir": str(tmp_path)})
    with pytest.raises(UsageError) as e:
        trainer.run(cfg)
    msg = str(e.value)
    assert "not enough GPU memory: the peft backend needs about 31.4 GiB, 24.0 GiB free" in msg
    assert "pip install -r requirements-gpu.txt" in msg and "lower --max_seq_length to" in msg
    seq = int(msg.split("lower --max_seq_length to ")[1].split()[0])
    fits = build_config(load_yaml(ROOT / "configs" / "r1-distill-qwen-14b-24gb.yaml"),
                        {"backend": "peft", "max_seq_length": seq})
    assert plan.needed(plan.memory(fits, "peft"), "peft") <= 24 * plan.GiB < \
        plan.needed(plan.memory(_r1("14B", load_in_4bit=True, max_seq_length=seq + 256), "peft"), "peft")
